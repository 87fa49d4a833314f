"""Stale-read checker: a read that starts after a commit returned must see that commit.

Writer threads update film rows (ORM unit of work and bulk ``update()``
statements) and, once ``commit()`` has returned, raise the row's entry in a
shared table of committed versions. Readers -- threads of this process and a
second, spawned process with its own client and ``ORMCache`` -- note those
versions *before* starting a read through ``FromCache`` or ``session.get``
and check the row they get is at least that new (and self-consistent: the
title names the version). Stale reads are counted, printed and must be 0.
Each row has one writer, so its committed versions only grow.

Runs on SQLite (file) and MariaDB; the soak variant (``pytest -m soak``)
runs ten times longer.
"""
from __future__ import annotations

import multiprocessing
import random
import threading
import time
import uuid
from collections import Counter
from typing import Any, Callable, List

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from sqla_memcache import Client
from sqla_memcache.orm import ORMCache

from support.threads import run_threads

from .fault_models import FILMS, FaultFilm, make_engine, read_once

WRITERS = 4
READERS = 6


def reader_process(url: str, servers: List[str], namespace: str, committed: Any, ready: Any, stop: Any, out: Any) -> None:
    """A second process reading through its own client and ORMCache (same namespace)."""
    engine = make_engine(url)
    cache = ORMCache(Client(servers, socket_timeout=30), namespace=namespace)
    Session = sessionmaker(engine)
    cache.listen_on_session(Session)
    rng = random.Random(99)
    counts: Counter = Counter()
    try:
        while not stop.is_set():
            kind, rows, stale = read_once(Session, rng, lambda: committed[:])
            counts[kind] += 1
            counts["rows"] += rows
            counts["stale"] += stale
            ready.set()
    except BaseException as exc:  # reported to the test
        counts["error: %r" % (exc,)] += 1
    finally:
        engine.dispose()
    out.put(dict(counts, hits=cache.stats.hits, misses=cache.stats.misses))


def run_checker(url: str, servers: List[str], commits_per_writer: int, report: Callable[[str], None]) -> int:
    """Run writers and readers; report the figures; return the number of stale reads seen."""
    engine = make_engine(url)
    namespace = "stale" + uuid.uuid4().hex[:8]
    # A generous timeout: this checks the no-fault guarantee; a memcached stall under CPU starvation
    # would be a fault, whose cross-process limit is documented and tested in test_orm_faults_extra.py.
    cache = ORMCache(Client(servers, socket_timeout=30), namespace=namespace)
    Session = sessionmaker(engine)
    cache.listen_on_session(Session)

    ctx = multiprocessing.get_context("spawn")
    committed = ctx.Array("q", FILMS + 1, lock=False)  # row -> newest version whose commit returned
    with engine.connect() as conn:
        for film_id, version in conn.execute(select(FaultFilm.film_id, FaultFilm.version)):
            committed[film_id] = version
    ready, stop = ctx.Event(), ctx.Event()
    out = ctx.Queue()
    other = ctx.Process(target=reader_process, args=(url, servers, namespace, committed, ready, stop, out))
    other.start()

    writers_done = threading.Event()
    counts: Counter = Counter()
    lock = threading.Lock()

    def writer(n: int) -> None:
        rng = random.Random(n)
        mine = [film_id for film_id in range(1, FILMS + 1) if film_id % WRITERS == n]
        for i in range(commits_per_writer):
            film_id = rng.choice(mine)
            version = committed[film_id] + 1
            with Session() as s:
                if i % 3 == 2:
                    s.execute(update(FaultFilm).where(FaultFilm.film_id == film_id).values(
                        version=version, title="FILM %02d v%d" % (film_id, version)))  # fmt: skip
                else:
                    film = s.get(FaultFilm, film_id)
                    if film.version != version - 1:  # the writer's own read started after its last commit
                        with lock:
                            counts["stale"] += 1
                    film.version = version
                    film.title = "FILM %02d v%d" % (film_id, version)
                s.commit()
            committed[film_id] = version  # only after commit() returned
            with lock:
                counts["commits"] += 1
            time.sleep(rng.random() * 0.1)  # reads between commits: hits, not only misses

    def reader(n: int) -> None:
        rng = random.Random(1000 + n)
        local: Counter = Counter()
        while not writers_done.is_set():
            kind, rows, stale = read_once(Session, rng, lambda: committed[:])
            local[kind] += 1
            local["rows"] += rows
            local["stale"] += stale
        with lock:
            counts.update(local)

    writers_left = [WRITERS]

    def worker(n: int) -> None:
        try:
            if n < WRITERS:
                writer(n)
            else:
                reader(n - WRITERS)
        except BaseException:
            writers_done.set()  # a failure ends the run
            raise
        finally:
            if n < WRITERS:
                with lock:
                    writers_left[0] -= 1
                    if writers_left[0] == 0:
                        writers_done.set()  # the readers stop once every writer is done

    assert ready.wait(60), "the other reader process did not start"  # reading before the writes start
    t0 = time.monotonic()
    failures = run_threads(worker, WRITERS + READERS)
    stop.set()
    theirs = out.get(timeout=60)
    other.join(30)
    elapsed = time.monotonic() - t0
    engine.dispose()
    assert failures == [], failures[:3]
    errors = [k for k in theirs if k.startswith("error")]
    assert errors == [], errors

    reads = sum(v for k, v in counts.items() if k.startswith(("session", "FromCache")))
    their_reads = sum(v for k, v in theirs.items() if k.startswith(("session", "FromCache")))
    report(
        "stale reads (%s): %d in this process + %d in the other process = %d; %d commits by %d writers; "
        "%d reads (%d rows) by %d reader threads, %d reads (%d rows) by the other process, in %.1fs; "
        "cache here %s, there hits=%d misses=%d; mix %s"
        % (url.split(":")[0], counts["stale"], theirs.get("stale", 0), counts["stale"] + theirs.get("stale", 0),
           counts["commits"], WRITERS, reads, counts["rows"], READERS, their_reads, theirs.get("rows", 0), elapsed,
           cache.stats.as_dict(), theirs["hits"], theirs["misses"],
           {k: v for k, v in counts.items() if k.startswith(("session", "FromCache"))})
    )
    assert counts["commits"] == WRITERS * commits_per_writer
    assert reads > 0 and their_reads > 0
    return counts["stale"] + theirs.get("stale", 0)


def test_no_stale_reads(fault_db_url, film_engine, memcached_cluster, report):
    assert run_checker(fault_db_url, memcached_cluster.servers, 40, report) == 0


@pytest.mark.soak
def test_no_stale_reads_soak(fault_db_url, film_engine, memcached_cluster, report):
    assert run_checker(fault_db_url, memcached_cluster.servers, 600, report) == 0


def test_the_checker_catches_stale_reads_when_invalidation_is_off(fault_db_url, film_engine, memcached_cluster,
                                                                   report, monkeypatch):
    """The checker is not vacuous: with commits no longer bumping version keys it counts stale reads."""
    if not fault_db_url.startswith("sqlite"):
        pytest.skip("one backend is enough to show the checker works")
    monkeypatch.setattr(ORMCache, "bump", lambda self, version_keys: None)
    assert run_checker(fault_db_url, memcached_cluster.servers, 30, report) > 0
