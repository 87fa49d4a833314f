"""Profile sqla_memcache.Client's hot paths: ``python -m bench.profile``.

    python -m bench.profile                 # cProfile of get, get_multi, set, set_multi, get_100k
    python -m bench.profile get --n 50000   # one path, more calls
    python -m bench.profile get --loop 20   # just loop for 20 s (attach py-spy to the pid)
    python -m bench.profile orm_get fromcache --top 30   # the ORM hit paths on SQLite
    python -m bench.profile fromcache --sort cumulative  # ... by cumulative time

Starts its own memcached with the harness's CPU placement and prints the top
functions by own time (``tottime``) per path, so the cost of each layer
(Client policy, connection, protocol parsing, serde) is visible.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time

from .cases import GM_MAPPING, VALUE_100, VALUE_100K
from .floor import Floor
from .runner import _placement
from .server import Memcached

PATHS = ("get", "get_multi", "set", "set_multi", "get_100k")
ORM_PATHS = ("orm_get", "fromcache")  # on SQLite, cache warm: the hit paths


def _orm_ops(client, tmpdir):
    """session.get(Film, pk) through ORMCache, and a FromCache hit of the top-5 query."""
    import itertools
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import sessionmaker
    from sqla_memcache.demo.loader import load_sakila
    from sqla_memcache.demo.models import Film
    from sqla_memcache.orm import FromCache, ORMCache

    engine = create_engine("sqlite:///" + os.path.join(tmpdir, "sakila.db"))
    load_sakila(engine, progress=None)
    Session = sessionmaker(engine)
    ORMCache(client, namespace="prof", expire=600).listen_on_session(Session)
    pks = itertools.cycle(range(1, 51))

    def orm_get():
        with Session() as s:
            return s.get(Film, next(pks)).title

    def fromcache():
        stmt = select(Film).order_by(Film.rental_rate.desc()).limit(5).options(FromCache(expire=600))
        with Session() as s:  # a new statement per call, as in the harness
            return [f.title for f in s.scalars(stmt).all()]

    return {"orm_get": orm_get, "fromcache": fromcache}


def _ops(client):
    keys = list(GM_MAPPING)
    sm = {f"bench:prof:sm:{i:03d}": VALUE_100 for i in range(100)}
    return {
        "get": lambda: client.get("bench:get100"),
        "get_multi": lambda: client.get_multi(keys),
        "set": lambda: client.set("bench:prof:set", VALUE_100),
        "set_multi": lambda: client.set_multi(sm),
        "get_100k": lambda: client.get("bench:get100k"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile")
    ap.add_argument("paths", nargs="*", help=f"any of {', '.join(PATHS)} (default: all)")
    ap.add_argument("--n", type=int, default=0, help="calls per path (default: ~2 s worth)")
    ap.add_argument("--top", type=int, default=14)
    ap.add_argument("--timer", default="wall", choices=("wall", "cpu"),
                    help="cpu: profile with time.process_time (steadier on a busy machine; "
                         "time blocked in recv/sendall is not counted)")
    ap.add_argument("--sort", default="tottime", choices=("tottime", "cumulative"),
                    help="order of the listing (default tottime: own time)")
    ap.add_argument("--loop", type=float, default=0,
                    help="instead of cProfile, run the path(s) for this many seconds "
                         "(for py-spy record --pid)")
    args = ap.parse_args(argv)
    args.paths = args.paths or list(PATHS)
    unknown = set(args.paths) - set(PATHS + ORM_PATHS)
    if unknown:
        ap.error(f"unknown path(s) {sorted(unknown)}; choose from {PATHS + ORM_PATHS}")
    from sqla_memcache import Client

    _placement("split")
    with Memcached() as server:
        floor = Floor(server.host, server.port)
        floor.store({"bench:get100": VALUE_100, "bench:get100k": VALUE_100K})
        floor.store(GM_MAPPING)
        client = Client([server.address])
        ops = _ops(client)
        if set(args.paths) & set(ORM_PATHS):
            import tempfile
            ops.update(_orm_ops(client, tempfile.mkdtemp(prefix="sqla_memcache_prof_")))
        if args.loop:
            print(f"pid {os.getpid()}: looping {args.paths} for {args.loop} s", flush=True)
            deadline = time.monotonic() + args.loop
            while time.monotonic() < deadline:
                for path in args.paths:
                    for _ in range(200):
                        ops[path]()
            return 0
        for path in args.paths:
            op = ops[path]
            n = args.n or {"get": 20000, "set": 20000, "orm_get": 1000, "fromcache": 1000}.get(path, 2000)
            for _ in range(200):
                op()
            prof = (cProfile.Profile(time.process_time) if args.timer == "cpu"
                    else cProfile.Profile())
            t0 = time.perf_counter()
            prof.enable()
            for _ in range(n):
                op()
            prof.disable()
            wall = time.perf_counter() - t0
            out = io.StringIO()
            stats = pstats.Stats(prof, stream=out).strip_dirs().sort_stats(args.sort)
            stats.print_stats(args.top)
            print(f"=== {path}: {n} calls, {wall / n * 1e6:.1f} µs/call under cProfile ===")
            print("\n".join(out.getvalue().splitlines()[6:]))
        client.disconnect_all()
        floor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
