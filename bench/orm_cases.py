"""ORM cases: sakila ``Film`` through SQLAlchemy, uncached vs through the cache.

Every operation opens a fresh ``Session`` (so the identity map never answers),
does its query, touches ``title`` and closes the session, as one web request
would. Cases, each on MariaDB and on SQLite:

* ``orm_get_<db>``: ``session.get(Film, pk)`` over 50 primary keys --
  ``db`` (a session no cache listens on), ``cached`` (a session an ``ORMCache``
  listens on; ``Film`` is a ``MemcachedORMObject``, so ``get`` is served from
  memcached) and ``naive`` (the classic recipe: ``client.get`` + ``pickle.loads``
  + ``session.merge(obj, load=False)``);
* ``orm_top5_<db>``: ``select(Film).order_by(Film.rental_rate.desc()).limit(5)``
  -- ``db`` vs ``fromcache`` (the same with ``FromCache(expire=600)``). The
  statement is built anew in every operation, as a request handler does (a
  statement object reused across calls would let caches keyed on the object
  answer, which real code rarely benefits from).

And ``fromcache_overhead``: a FromCache hit on the top-5 query vs ``bare``
(``pickle.loads(client.get(key))`` of the same five ``Film`` rows, no session),
with ``bare_merge`` (bare plus ``merge(load=False)`` into a fresh session) and
``fromcache_same_session`` (one session reused for the whole batch) as reference
points between the two.

Before timing, each variant runs once with SQL statements counted on the engine:
a cached variant that still talks to the database is reported in the notes.
"""
from __future__ import annotations

import itertools
import os
import pickle
import shutil
import tempfile
from typing import Callable, Dict, List, Optional, Tuple

from .runner import Prepared

PKS = list(range(1, 51))
ORM_OPS = {"orm_get": 400, "orm_top5": 300, "fromcache_overhead": 2000}


def _titles(case: str) -> str:
    return {
        "orm_get": "session.get(Film, pk), fresh session",
        "orm_top5": "top-5 films by rental rate, fresh session",
        "fromcache_overhead": "FromCache hit vs bare client.get + pickle.loads of the same 5 rows",
    }[case]


class _Counter:
    """Counts SQL statements sent through an engine."""

    def __init__(self, engine) -> None:
        from sqlalchemy import event
        self.n = 0
        event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, *args, **kwargs) -> None:
        self.n += 1


class OrmBench:
    def __init__(self, server, mysql_url: Optional[str] = None,
                 log: Callable[[str], None] = print) -> None:
        self.server = server
        self.mysql_url = mysql_url
        self.log = log
        self.tmpdir = tempfile.mkdtemp(prefix="sqla_memcache_bench_")
        self.engines: list = []
        self.clients: list = []
        self.notes: Dict[str, str] = {}

    # -- setup ----------------------------------------------------------------
    def _client(self):
        """sqla_memcache.Client, or python-memcached (same API) until ours imports."""
        try:
            from sqla_memcache import Client
            name = "sqla_memcache.Client"
        except Exception:
            from memcache import Client
            name = "python-memcached Client (sqla_memcache.Client unavailable)"
        client = Client([self.server.address])
        self.clients.append(client)
        return client, name

    def _engine(self, db: str):
        from sqlalchemy import create_engine
        from sqla_memcache.demo.loader import create_database_if_missing, load_sakila
        if db == "sqlite":
            url = "sqlite:///" + os.path.join(self.tmpdir, "sakila.db")
        else:
            if not self.mysql_url:
                raise RuntimeError("no MariaDB URL given (--mysql-url)")
            url = self.mysql_url
            create_database_if_missing(url)
        engine = create_engine(url)
        self.engines.append(engine)
        load_sakila(engine, progress=None)
        return engine

    def prepare(self, scale: float, ops: Optional[int], only: Optional[List[str]]
                ) -> Tuple[List[Prepared], Dict[str, str]]:
        wanted = [f"{c}_{db}" for c in ("orm_get", "orm_top5") for db in ("mariadb", "sqlite")]
        wanted.append("fromcache_overhead")
        if only:
            wanted = [w for w in wanted if w in only]
        if not wanted:
            return [], {}

        def size(case: str) -> int:
            return ops or max(8, int(ORM_OPS[case] * scale))

        try:
            from sqlalchemy import select  # noqa: F401  (availability check)
            from sqlalchemy.orm import sessionmaker
            from sqla_memcache.orm import FromCache, ORMCache  # noqa: F401
            from sqla_memcache.demo.models import Film  # noqa: F401
        except Exception as exc:
            reason = f"ORM layer not importable: {type(exc).__name__}: {exc}"
            out = []
            for w in wanted:
                base = w.rsplit("_", 1)[0] if w != "fromcache_overhead" else w
                p = Prepared(w, _titles(base), "op", size(base), "orm",
                             "bare" if base == "fromcache_overhead" else "db", {})
                p.unavailable = {"all variants": reason}
                out.append(p)
            return out, {"import": reason}

        client, client_name = self._client()
        self.notes["client"] = f"ORM cache client: {client_name}."
        prepared: List[Prepared] = []
        for db in ("mariadb", "sqlite"):
            cases = [w for w in wanted if w.endswith("_" + db)]
            if not cases and not (db == "sqlite" and "fromcache_overhead" in wanted):
                continue
            try:
                engine = self._engine(db)
            except Exception as exc:
                reason = f"{db} unavailable: {type(exc).__name__}: {str(exc)[:120]}"
                self.log(f"  {reason}")
                for w in cases:
                    base = w.rsplit("_", 1)[0]
                    p = Prepared(w, f"{_titles(base)}, {db}", "op", size(base), "orm", "db", {})
                    p.unavailable = {"all variants": reason}
                    prepared.append(p)
                if db == "sqlite" and "fromcache_overhead" in wanted:
                    p = Prepared("fromcache_overhead", _titles("fromcache_overhead"), "op",
                                 size("fromcache_overhead"), "orm", "bare", {})
                    p.unavailable = {"all variants": reason}
                    prepared.append(p)
                continue
            counter = _Counter(engine)
            plain = sessionmaker(engine)
            cached = sessionmaker(engine)
            cache = ORMCache(client, namespace=f"bench{db}", expire=600)
            cache.listen_on_session(cached)
            if f"orm_get_{db}" in cases:
                prepared.append(self._orm_get(db, size("orm_get"), engine, counter, plain,
                                              cached, client))
            if f"orm_top5_{db}" in cases:
                prepared.append(self._orm_top5(db, size("orm_top5"), counter, plain, cached))
            if db == "sqlite" and "fromcache_overhead" in wanted:
                prepared.append(self._overhead(size("fromcache_overhead"), counter, plain,
                                               cached, client))
        order = {w: i for i, w in enumerate(wanted)}
        prepared.sort(key=lambda p: order.get(p.name, 99))
        return prepared, self.notes

    def _finish(self, p: Prepared, counter: _Counter, checks: Dict[str, Callable]) -> Prepared:
        """Run every variant once (twice for cached ones), check it, count its SQL."""
        sql = {}
        for name, op in list(p.variants.items()):
            try:
                op()  # fills the cache for cached variants
                before = counter.n
                result = op()
                sql[name] = counter.n - before
                if not checks[name](result):
                    raise AssertionError(f"wrong result: {repr(result)[:120]}")
            except Exception as exc:
                del p.variants[name]
                p.unavailable[name] = f"{type(exc).__name__}: {str(exc)[:160]}"
        p.notes = "SQL statements per op: " + ", ".join(f"{k} {v}" for k, v in sql.items()) + "."
        stale = [k for k in sql if k != p.baseline and sql[k]]
        if stale:
            p.notes += f" WARNING: {', '.join(stale)} still ran SQL on a warm cache."
        return p

    def _orm_get(self, db, n, engine, counter, plain, cached, client) -> Prepared:
        from sqla_memcache.demo.models import Film
        for pk in PKS:  # warm the cache for every pk the batch will read
            with cached() as s:
                s.get(Film, pk)
        naive_keys = {}
        with plain() as s:
            for pk in PKS:
                film = s.get(Film, pk)
                key = f"bench:naive:{db}:film:{pk}"
                s.expunge(film)
                client.set(key, pickle.dumps(film, pickle.HIGHEST_PROTOCOL))
                naive_keys[pk] = key
        get_raw = client.get
        loads = pickle.loads

        def make(factory, naive=False):
            pks = itertools.cycle(PKS)

            def op():
                pk = next(pks)
                with factory() as s:
                    if naive:
                        film = s.merge(loads(get_raw(naive_keys[pk])), load=False)
                    else:
                        film = s.get(Film, pk)
                    film.title
                    return film.film_id == pk

            return op

        p = Prepared(f"orm_get_{db}", f"{_titles('orm_get')}, {db}", "op", n, "orm", "db",
                     {"db": make(plain), "cached": make(cached), "naive": make(plain, True)},
                     labels={"db": f"{db}, no cache", "cached": "session.get via ORMCache",
                             "naive": "client.get + pickle.loads + merge(load=False)"})
        ok = lambda r: r is True  # noqa: E731
        return self._finish(p, counter, {"db": ok, "cached": ok, "naive": ok})

    @staticmethod
    def _top5_factory():
        """``top5(cached)``: a new statement object per call, as a request handler builds one."""
        from sqlalchemy import select
        from sqla_memcache.demo.models import Film
        from sqla_memcache.orm import FromCache

        def top5(cached: bool = False):
            stmt = select(Film).order_by(Film.rental_rate.desc()).limit(5)
            return stmt.options(FromCache(expire=600)) if cached else stmt

        return top5

    def _orm_top5(self, db, n, counter, plain, cached) -> Prepared:
        top5 = self._top5_factory()

        def make(factory, cached):
            def op():
                with factory() as s:
                    films = s.scalars(top5(cached)).all()
                    for f in films:
                        f.title
                    return len(films)
            return op

        p = Prepared(f"orm_top5_{db}", f"{_titles('orm_top5')}, {db}", "op", n, "orm", "db",
                     {"db": make(plain, False), "fromcache": make(cached, True)},
                     labels={"db": f"{db}, no cache", "fromcache": "FromCache(expire=600) hit"})
        five = lambda r: r == 5  # noqa: E731
        return self._finish(p, counter, {"db": five, "fromcache": five})

    def _overhead(self, n, counter, plain, cached, client) -> Prepared:
        top5 = self._top5_factory()
        with plain() as s:
            rows = s.scalars(top5()).all()
            s.expunge_all()
        key = "bench:bare:top5"
        client.set(key, pickle.dumps(rows, pickle.HIGHEST_PROTOCOL))
        get_raw = client.get
        loads = pickle.loads

        def bare():
            films = loads(get_raw(key))
            for f in films:
                f.title
            return len(films)

        def bare_merge():
            with plain() as s:
                films = [s.merge(f, load=False) for f in loads(get_raw(key))]
                for f in films:
                    f.title
                return len(films)

        def fromcache():
            with cached() as s:
                films = s.scalars(top5(True)).all()
                for f in films:
                    f.title
                return len(films)

        shared = {"session": None}

        def fromcache_same_session():
            s = shared["session"]
            if s is None:
                s = shared["session"] = cached()
            films = s.scalars(top5(True)).all()
            for f in films:
                f.title
            return len(films)

        p = Prepared("fromcache_overhead", _titles("fromcache_overhead"), "op", n, "orm", "bare",
                     {"bare": bare, "fromcache": fromcache, "bare_merge": bare_merge,
                      "fromcache_same_session": fromcache_same_session},
                     labels={"bare": "pickle.loads(client.get(key)), no session",
                             "fromcache": "FromCache hit, fresh session",
                             "bare_merge": "bare + merge(load=False), fresh session",
                             "fromcache_same_session": "FromCache hit, one session reused"})
        self._shared = shared
        five = lambda r: r == 5  # noqa: E731
        return self._finish(p, counter, {k: five for k in p.variants})

    def close(self) -> None:
        shared = getattr(self, "_shared", None)
        if shared and shared["session"] is not None:
            shared["session"].close()
        for engine in self.engines:
            engine.dispose()
        for client in self.clients:
            try:
                client.disconnect_all()
            except Exception:
                pass
        shutil.rmtree(self.tmpdir, ignore_errors=True)
