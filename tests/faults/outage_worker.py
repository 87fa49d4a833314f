"""Writer and reader processes for the two-process outage tests (imported by spawned children).

The writer commits row updates on command and publishes each row's newest
committed version in a shared array once ``commit()`` returned (or, when told
to die between COMMIT and bump, from the fault-injection hook right after the
DBAPI commit). The reader warms the cache, stays quiet, then reads on command
and counts stale reads: rows older than the version committed before the read
started.
"""
from __future__ import annotations

import os
import random
import time
from collections import Counter
from typing import Any, List, Optional



def _listening(url: str, servers: List[str], namespace: str, socket_timeout: float, durable: bool) -> Any:
    from sqlalchemy.orm import sessionmaker

    from .fault_models import make_engine
    from sqla_memcache import Client
    from sqla_memcache.orm import ORMCache

    engine = make_engine(url)
    extra = {"durable_log": True} if durable else {}
    cache = ORMCache(Client(servers, socket_timeout=socket_timeout), namespace=namespace, **extra)
    Session = sessionmaker(engine)
    cache.listen_on_session(Session)
    return engine, cache, Session


def writer(url: str, servers: List[str], namespace: str, durable: bool, committed: Any, commands: Any,
           replies: Any) -> None:
    """Commit on command: ``("commit", film_ids, pause)``, ``("die-after-commit", film_id)``,
    ``("wait-delivered", timeout)`` (replies the monotonic time its bumps were all delivered), ``("quit",)``."""
    from sqla_memcache.orm import capture
    from .fault_models import FaultFilm

    # the defaults a deployment has: dead_retry 30 s; a short timeout keeps the test quick
    engine, cache, Session = _listening(url, servers, namespace, 0.3, durable)

    stale = 0  # the writer's own reads (through the cache) of rows it committed before

    def commit(film_id: int) -> int:
        nonlocal stale
        with Session() as s:
            film = s.get(FaultFilm, film_id)
            stale += film.version != committed[film_id]
            film.version = version = committed[film_id] + 1
            film.title = "FILM %02d v%d" % (film_id, version)
            s.commit()
        return version

    while True:
        command = commands.get()
        if command[0] == "commit":
            for film_id in command[1]:
                committed[film_id] = commit(film_id)
                time.sleep(command[2])
            replies.put(("committed", cache.pending_invalidations, stale))
        elif command[0] == "die-after-commit":
            film_id = command[1]
            version = committed[film_id] + 1

            def die() -> None:  # the DBAPI commit returned; no bump has been sent
                committed[film_id] = version
                os._exit(17)

            capture.after_commit_hook = die
            with Session() as s:
                film = s.get(FaultFilm, film_id)
                film.version = version
                film.title = "FILM %02d v%d" % (film_id, version)
                s.commit()
            raise AssertionError("the writer outlived its commit")
        elif command[0] == "wait-delivered":
            deadline = time.monotonic() + command[1]
            while cache.pending_invalidations and time.monotonic() < deadline:
                time.sleep(0.005)
            revived = getattr(getattr(cache, "redeliverer", None), "revived_at", None)
            replies.put(("delivered", time.monotonic() if not cache.pending_invalidations else None, revived))
        else:
            break
    engine.dispose()


def reader(url: str, servers: List[str], namespace: str, deliver_interval: Optional[float], committed: Any,
           commands: Any, replies: Any) -> None:
    """``("warm",)``: read every row by ``session.get`` and by a one-row ``FromCache`` query, twice,
    and a random mix; ``("read", seconds)``: read for that long, reply the figures;
    ``("check", film_id)``: read one row both ways, reply the versions seen and the committed one."""
    from sqlalchemy import select

    from sqla_memcache.orm import FromCache

    from .fault_models import FILMS, FaultFilm, read_once

    def versions(film_id: int) -> List[int]:
        with Session() as s:
            by_get = s.get(FaultFilm, film_id).version
        with Session() as s:
            one_row = select(FaultFilm).where(FaultFilm.film_id == film_id).options(FromCache())
            return [by_get, s.scalars(one_row).one().version]

    engine, cache, Session = _listening(url, servers, namespace, 1.0, False)
    deliverer = cache.start_deliverer(engine, interval=deliver_interval) if deliver_interval else None
    rng = random.Random(7)
    while True:
        command = commands.get()
        if command[0] == "warm":
            for _ in range(2):  # every row cached both ways: a lost bump leaves each one stale
                for film_id in range(1, FILMS + 1):
                    versions(film_id)
            for _ in range(3):
                for kind in range(12):
                    read_once(Session, rng, lambda: committed[:])
            replies.put(("warm", cache.stats.hits))
        elif command[0] == "check":
            replies.put(("check", versions(command[1]), committed[command[1]]))
        elif command[0] == "read":
            # A quiet reader holds no connection the outage broke (pooled sockets to a restarted
            # server would make its client see the outage itself): it meets the server as it is now.
            cache.client.disconnect_all()
            t0 = time.monotonic()
            counts: Counter = Counter()
            stale_at: List[float] = []
            while time.monotonic() - t0 < command[1]:
                started = time.monotonic()
                kind, rows, stale = read_once(Session, rng, lambda: committed[:])
                counts["reads"] += 1
                counts["rows"] += rows
                if stale:
                    counts["stale reads"] += 1
                    counts["stale rows"] += stale
                    stale_at.append(started)
            replies.put(("read", dict(counts, hits=cache.stats.hits, misses=cache.stats.misses), stale_at))
        else:
            break
    if deliverer is not None:
        deliverer.stop(5)
    engine.dispose()
