"""Load: 16 threads on one shared ``Client`` (3 real servers) and on the ORM cache.

Every value read is checked against what the thread knows it stored; the
process's open file descriptors are counted before, after, and after
``disconnect_all()`` (no leaked sockets); a second pass must not grow the
Python heap (tracemalloc) beyond a small bound. The default variants run
16 x 1,500 client operations and 16 x 150 ORM operations; the soak variants
(``pytest -m soak tests/faults/test_load.py``) run 16 x 10,000 of each.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
import threading
import time
import tracemalloc
import uuid
from collections import Counter
from typing import Any, Callable, Dict, Iterator, List

import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from support.sql import StatementCounter
from support.threads import run_threads

from sqla_memcache import Client
from sqla_memcache.orm import FromCache, ORMCache

from .fault_models import FILMS, FaultFilm, make_engine, seed_films

THREADS = 16


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def sockets_to(servers: List[str]) -> int:
    """This process's open TCP sockets to these ``host:port`` servers (Linux ``/proc``).

    Counting every file descriptor would also count what other parts of the test
    process open and close meanwhile (a database pool, a thread an earlier test
    left); only the client's sockets to these servers are its own business."""
    ports = {int(server.rsplit(":", 1)[1]) for server in servers}
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink("/proc/self/fd/" + fd)
        except OSError:  # closed meanwhile (the listing's own descriptor, say)
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[2].rsplit(":", 1)[1], 16) in ports and fields[9] in inodes:
                count += 1
    return count


@contextlib.contextmanager
def counted_library_warnings() -> Iterator[List[logging.LogRecord]]:
    """Count sqla_memcache's WARNING records instead of letting pytest's log capture keep them:
    pytest holds every captured record in memory, which would read as heap growth."""
    logger = logging.getLogger("sqla_memcache")
    seen: List[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = seen.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


# --------------------------------------------------------------------------
# one shared Client, 3 servers
# --------------------------------------------------------------------------

def value_for(rng: random.Random, n: int, i: int) -> Any:
    kind = rng.random()
    if kind < 0.3:
        return "s-%d-%d-" % (n, i) + "x" * rng.randrange(200)
    if kind < 0.5:
        return b"b-%d-%d-" % (n, i) + os.urandom(rng.randrange(1, 4000))
    if kind < 0.7:
        return {"n": n, "i": i, "items": list(range(rng.randrange(50)))}
    if kind < 0.95:
        return rng.randrange(1 << 40)
    return b"L" * rng.randrange(100_000, 300_000)  # large values: many recv() per reply


def client_pass(client: Client, ops_per_thread: int, salt: str) -> Counter:
    """16 threads of mixed operations on their own keys; every read checked against the thread's model."""
    counts: Counter = Counter()
    lock = threading.Lock()

    def worker(n: int) -> None:
        rng = random.Random(hash((salt, n)))
        model: Dict[str, Any] = {}
        mine: Counter = Counter()
        keys = ["%s:%d:%d" % (salt, n, k) for k in range(40)]
        for i in range(ops_per_thread):
            key = rng.choice(keys)
            op = rng.random()
            if op < 0.30:
                got = client.get(key)
                assert got == model.get(key), (key, got, model.get(key))
                mine["get"] += 1
            elif op < 0.45:
                value = value_for(rng, n, i)
                assert client.set(key, value) is True
                model[key] = value
                mine["set"] += 1
            elif op < 0.55:
                some = rng.sample(keys, 8)
                got = client.get_multi(some)
                assert got == {k: model[k] for k in some if k in model}
                mine["get_multi"] += 1
            elif op < 0.62:
                batch = {k: value_for(rng, n, i) for k in rng.sample(keys, 5)}
                assert client.set_multi(batch) == []
                model.update(batch)
                mine["set_multi"] += 1
            elif op < 0.68:
                assert client.delete(key) == (1 if key in model else 0)
                model.pop(key, None)
                mine["delete"] += 1
            elif op < 0.74:
                stored = client.add(key, i)
                assert stored is (key not in model), (key, stored)
                model.setdefault(key, i)
                mine["add"] += 1
            elif op < 0.82:
                current = model.get(key)
                result = client.incr(key, 3)
                if isinstance(current, int) and not isinstance(current, bool):
                    assert result == current + 3
                    model[key] = current + 3
                elif current is None:
                    assert result is None
                else:
                    assert result is None  # memcached refuses a non-numeric value: the quiet None
                mine["incr"] += 1
            elif op < 0.88:
                value, cas_id = client.gets_cas(key)
                assert value == model.get(key)
                if cas_id is not None:
                    assert client.cas(key, ("cas", n, i), cas_id=cas_id) is True
                    model[key] = ("cas", n, i)
                    assert client.cas(key, "lost", cas_id=cas_id) is False  # id used up
                mine["cas"] += 1
            elif op < 0.93:
                assert client.touch(key, 600) == (1 if key in model else 0)
                mine["touch"] += 1
            elif op < 0.97:
                stored = client.replace(key, "r-%d" % i)
                assert stored is (key in model)
                if stored:
                    model[key] = "r-%d" % i
                mine["replace"] += 1
            else:
                if client.append(key, "+") is True:
                    # append works on the raw bytes, whatever the flags
                    old = model[key]
                    model[key] = old + "+" if isinstance(old, str) else (old + b"+" if isinstance(old, bytes) else None)
                    if model[key] is None:
                        model.pop(key)
                        client.delete(key)
                else:
                    assert key not in model
                mine["append"] += 1
        # final check of everything this thread owns
        assert client.get_multi(keys) == {k: v for k, v in model.items()}
        with lock:
            counts.update(mine)

    failures = run_threads(worker, THREADS)
    assert failures == [], failures[:3]
    return counts


def run_client_load(servers: List[str], ops_per_thread: int, report: Callable[[str], None]) -> None:
    gc.collect()
    sockets_before = sockets_to(servers)
    client = Client(servers, socket_timeout=30)  # a load test, not a fault test: ride out CPU starvation
    first = client_pass(client, ops_per_thread, "p1")
    pooled = sum(h.idle_count() for h in client.servers)
    assert sockets_to(servers) - sockets_before == pooled <= THREADS * len(servers)  # every open socket is in the pool
    # Idle pooled connections keep their last reply buffer (bounded by pool size x largest
    # reply): close them so the heap comparison sees only what the pass itself leaves behind.
    client.disconnect_all()
    assert sockets_to(servers) == sockets_before, "sockets leaked"
    gc.collect()
    tracemalloc.start()
    try:
        with counted_library_warnings() as warned:
            base = tracemalloc.take_snapshot()
            client.flush_all()
            second = client_pass(client, ops_per_thread, "p1")  # same keys again: a steady state
            assert sockets_to(servers) - sockets_before == sum(h.idle_count() for h in client.servers)
            client.disconnect_all()
            gc.collect()
            after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert [r.getMessage() for r in warned] == []
    grown = sum(stat.size_diff for stat in after.compare_to(base, "filename"))
    assert grown < 256 * 1024, "heap grew by %d bytes over a second pass" % grown
    assert sockets_to(servers) == sockets_before, "sockets leaked"
    total = sum(first.values()) + sum(second.values())
    report(
        "client: %d threads x %d ops x 2 passes = %d operations on 3 servers, every value checked, "
        "0 errors; sockets to the servers: %d before, %d pooled after a pass, %d after disconnect_all; "
        "heap delta over pass 2: %+d bytes; mix %s"
        % (THREADS, ops_per_thread, total, sockets_before, pooled, sockets_to(servers), grown, dict(first + second))
    )


def test_client_load_16_threads(memcached_cluster, report):
    run_client_load(memcached_cluster.servers, 1500, report)


@pytest.mark.soak
def test_client_load_16_threads_soak(memcached_cluster, report):
    run_client_load(memcached_cluster.servers, 10_000, report)


# --------------------------------------------------------------------------
# the ORM cache: FromCache and session.get, threads with their own sessions
# --------------------------------------------------------------------------

def owned_rows(n: int) -> List[int]:
    """Rows thread *n* writes (only it does): its reads of them must see its last commit."""
    return [film_id for film_id in range(1, FILMS + 1) if (film_id - 1) % THREADS == n]


def orm_pass(Session: sessionmaker, ops_per_thread: int, salt: int, write_ratio: float) -> Counter:
    counts: Counter = Counter()
    lock = threading.Lock()
    everything = select(FaultFilm).order_by(FaultFilm.film_id).options(FromCache())

    def consistent(film: FaultFilm) -> None:
        assert film.title == "FILM %02d v%d" % (film.film_id, film.version), (film.film_id, film.title, film.version)

    def worker(n: int) -> None:
        rng = random.Random(salt * 1000 + n)
        mine = owned_rows(n)
        with Session() as s:
            model = {f.film_id: f.version for f in s.scalars(select(FaultFilm).where(FaultFilm.film_id.in_(mine)))}
        local: Counter = Counter()
        own_query = select(FaultFilm).where(FaultFilm.film_id.in_(mine)).order_by(FaultFilm.film_id).options(FromCache())
        for _ in range(ops_per_thread):
            op = rng.random()
            with Session() as s:
                if op < write_ratio:
                    film_id = rng.choice(mine)
                    film = s.get(FaultFilm, film_id)
                    film.version = model[film_id] + 1
                    film.title = "FILM %02d v%d" % (film_id, film.version)
                    s.commit()
                    model[film_id] = film.version
                    local["commit"] += 1
                elif op < 0.45:
                    film_id = rng.randrange(1, FILMS + 1)
                    film = s.get(FaultFilm, film_id)
                    consistent(film)
                    if film_id in model:
                        assert film.version == model[film_id], (film_id, film.version, model[film_id])
                    local["session.get"] += 1
                elif op < 0.75:
                    films = s.scalars(own_query).all()
                    assert [(f.film_id, f.version) for f in films] == sorted(model.items())
                    local["FromCache own rows"] += 1
                else:
                    films = s.scalars(everything).all()
                    assert len(films) == FILMS
                    for film in films:
                        consistent(film)
                        if film.film_id in model:
                            assert film.version == model[film.film_id]
                    local["FromCache all rows"] += 1
        with lock:
            counts.update(local)

    failures = run_threads(worker, THREADS)
    assert failures == [], failures[:3]
    return counts


def run_orm_load(url: str, servers: List[str], ops_per_thread: int, report: Callable[[str], None]) -> None:
    gc.collect()
    fds_before = open_fds()
    engine = make_engine(url)
    seed_films(engine)
    sql = StatementCounter(engine, keep=False, watch=["f_film"])
    cache = ORMCache(Client(servers, socket_timeout=30), namespace="load" + uuid.uuid4().hex[:8])
    Session = sessionmaker(engine)
    cache.listen_on_session(Session)
    t0 = time.monotonic()
    first = orm_pass(Session, ops_per_thread, 1, 0.05)
    gc.collect()
    tracemalloc.start()
    try:
        with counted_library_warnings() as warned:
            base = tracemalloc.take_snapshot()
            second = orm_pass(Session, min(ops_per_thread, 1000), 2, 0.05)  # traced: slower, so capped
            gc.collect()
            after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert [r.getMessage() for r in warned][:5] == []
    elapsed = time.monotonic() - t0
    grown = sum(stat.size_diff for stat in after.compare_to(base, "filename"))
    assert grown < 1024 * 1024, "heap grew by %d bytes over a second pass" % grown
    assert cache.stats.errors == 0
    assert cache.stats.hits > cache.stats.misses
    selects = sql.selects("f_film")
    engine.dispose()
    cache.client.disconnect_all()
    assert open_fds() == fds_before, "file descriptors leaked (sockets or database files)"
    total = sum(first.values()) + sum(second.values())
    report(
        "ORM (%s): %d threads x %d ops + a traced pass = %d operations in %.1fs, every row checked, 0 errors; "
        "cache %s; %d SELECTs reached the database; heap delta over pass 2: %+d bytes; fds back to %d; mix %s"
        % (url.split(":")[0], THREADS, ops_per_thread, total, elapsed, cache.stats.as_dict(), selects, grown,
           fds_before, dict(first + second))
    )


def test_orm_load_16_threads(fault_db_url, memcached_cluster, report):
    if not fault_db_url.startswith("sqlite"):
        pytest.skip("the default variant runs on the SQLite file database; the soak variant on both")
    run_orm_load(fault_db_url, memcached_cluster.servers, 150, report)


@pytest.mark.soak
def test_orm_load_16_threads_soak(fault_db_url, memcached_cluster, report):
    run_orm_load(fault_db_url, memcached_cluster.servers, 10_000, report)
