"""ORM cases: sakila ``Film`` through SQLAlchemy, uncached vs every way of caching it.

Every operation opens a fresh ``Session`` (so the identity map never answers),
does its query, touches ``title`` and closes the session, as one web request
would. Cases, each on MariaDB and on SQLite:

* ``orm_get_<db>``: ``session.get(Film, pk)`` over 50 primary keys;
* ``orm_top5_<db>``: ``select(Film).order_by(Film.rental_rate.desc()).limit(5)``,
  the statement built anew in every operation, as a request handler does (a
  statement object reused across calls would let caches keyed on the object
  answer, which real code rarely benefits from).

Variants of both (all but ``db`` and ``db_captured`` are warm-cache hits that
send no SQL):

* ``db``: a session on an engine no cache has seen (an application without
  any cache);
* ``db_captured``: the same uncached query on the engine sqla_memcache's
  sessions use, whose write capture judges every statement the engine runs:
  what the cache adds to every query it does not answer;
* ``cached`` / ``fromcache``: sqla_memcache -- a session an ``ORMCache`` listens
  on; ``Film`` is a ``MemcachedORMObject``, so ``session.get`` is served from
  memcached, and the top-5 query carries ``FromCache(expire=600)``;
* ``naive``: the classic cache-aside recipe, no invalidation at all:
  ``client.get(key)`` + ``pickle.loads`` + ``session.merge(obj, load=False)``
  for each object, with a key the application chose (``film:<pk>``, ``top5``);
* ``hook_floor`` / ``hook_floor_rt``: bounds, not caches: SQLAlchemy's path to a
  ``do_orm_execute`` answer kept in process, and that plus one ``get_counters``
  round trip of the version keys sqla_memcache's hit reads;
* ``dogpile``: SQLAlchemy's ``examples/dogpile_caching`` as shipped in the
  installed version's source distribution (see :mod:`bench.dogpile_example`),
  region on dogpile.cache's pymemcache backend over the same memcached, no
  invalidation: ``session.get(Film, pk, options=[FromCache(region)])`` and the
  top-5 statement with ``.options(FromCache(region))``.

And ``fromcache_overhead`` (SQLite): a FromCache hit on the top-5 query vs
``bare`` (``pickle.loads(client.get(key))`` of the same five ``Film`` rows, no
session), with ``bare_merge`` (the naive recipe) and ``fromcache_same_session``
(one session reused for the whole batch) as reference points between the two.

Before timing, each variant runs once with SQL statements counted on the engine:
a cached variant that still talks to the database is reported in the notes.

:class:`Contenders` builds the operations; the timing harness (:class:`OrmBench`)
and the instruction-count mode (:mod:`bench.callgrind`) both use it, so both
measure exactly the same code.
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

#: The hook floor: what any cache answering in SQLAlchemy's do_orm_execute hook costs at least.
HOOK_FLOOR = ("floor of a do_orm_execute cache: the answer kept in process, no I/O, no check, "
              "objects not attached")
#: The hook floor plus the one round trip a correct hit cannot skip.
HOOK_FLOOR_RT = ("hook floor + one get_counters of the version keys sqla_memcache's hit reads "
                 "(no plan, no check, no attach)")

LABELS = {
    "orm_get": {"cached": "session.get via sqla_memcache ORMCache",
                "naive": "naive: client.get + pickle.loads + merge(load=False)",
                "dogpile": "SQLAlchemy examples/dogpile_caching (pymemcache backend)",
                "hook_floor": HOOK_FLOOR, "hook_floor_rt": HOOK_FLOOR_RT},
    "orm_top5": {"fromcache": "sqla_memcache FromCache(expire=600) hit",
                 "naive": "naive: client.get + pickle.loads + merge(load=False) x5",
                 "dogpile": "SQLAlchemy examples/dogpile_caching (pymemcache backend)",
                 "hook_floor": HOOK_FLOOR, "hook_floor_rt": HOOK_FLOOR_RT},
}


def _titles(case: str) -> str:
    return {
        "orm_get": "session.get(Film, pk), fresh session",
        "orm_top5": "top-5 films by rental rate, fresh session",
        "fromcache_overhead": "FromCache hit vs bare client.get + pickle.loads of the same 5 rows",
    }[case]


class _Counter:
    """Counts SQL statements sent through some engines, until :meth:`close`.

    Closed before timing: a listener on an engine makes SQLAlchemy dispatch
    events on every statement, which the ``db`` variant must not pay.
    """

    def __init__(self, *engines) -> None:
        from sqlalchemy import event
        self.n = 0
        self.engines = engines
        for engine in engines:
            event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, *args, **kwargs) -> None:
        self.n += 1

    def close(self) -> None:
        from sqlalchemy import event
        for engine in self.engines:
            event.remove(engine, "before_cursor_execute", self._on_execute)
        self.engines = ()


def top5_statement(option=None):
    """The top-5 query, built anew (as a request handler builds it), with ``option``."""
    from sqlalchemy import select
    from sqla_memcache.demo.models import Film
    stmt = select(Film).order_by(Film.rental_rate.desc()).limit(5)
    return stmt.options(option) if option is not None else stmt


def _install_round_trip(factory, client, keys: Callable[[], List[str]]) -> None:
    """Before the hook floor's answer, read ``keys()`` with one ``get_counters`` round trip
    (install it before :func:`_install_hook_floor`: listeners run in order)."""
    from sqlalchemy import event

    @event.listens_for(factory, "do_orm_execute")
    def _round_trip(state):
        if state.is_select:
            client.get_counters(keys())


def _install_hook_floor(factory) -> None:
    """Answer every SELECT of *factory*'s sessions in ``do_orm_execute`` from a dict
    filled by its first execution: SQLAlchemy's path from ``session.get`` or
    ``session.scalars`` to the hook and from the returned result to the objects,
    with nothing in between -- no round trip, no version check, no copy, no
    attach (the objects stay those of the first, closed session). A lower bound
    for any cache in that hook (sqla_memcache's, the dogpile example's), not a
    usable cache."""
    from sqlalchemy import event

    answers: Dict[tuple, object] = {}

    @event.listens_for(factory, "do_orm_execute")
    def _answer(state):
        if not state.is_select:
            return None
        params = state.parameters
        key = tuple(params.items()) if params else ()
        frozen = answers.get(key)
        if frozen is None:
            frozen = answers[key] = state.invoke_statement().freeze()
        return frozen()


class Contenders:
    """Session factories and cache entries for every variant, on one database.

    sqla_memcache's sessions (and ``db_captured``) use ``engine``; the others
    use ``plain_engine``, a second engine on the same URL that no cache has
    seen, as an application without sqla_memcache has (:meth:`close` disposes
    it). ``client`` is the memcached client the naive recipe and sqla_memcache use;
    ``address`` is that memcached's ``host:port`` (for the dogpile region);
    ``name`` keeps the keys of two engines apart. ``dogpile_skipped`` is the
    reason the dogpile variants are missing, or ``None``.
    """

    def __init__(self, engine, client, address: str, name: str,
                 log: Callable[[str], None] = lambda s: None) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.orm import sessionmaker
        from sqla_memcache.orm import ORMCache
        from . import dogpile_example

        self.name = name
        self.client = client
        self.plain_engine = create_engine(engine.url)
        self.plain = sessionmaker(self.plain_engine)
        self.cached = sessionmaker(engine)
        self.captured = sessionmaker(engine)
        self.hooked = sessionmaker(self.plain_engine)
        _install_hook_floor(self.hooked)
        self.orm_cache = ORMCache(client, namespace=f"bench{name}", expire=600)
        self.orm_cache.listen_on_session(self.cached)
        #: the version keys the last sqla_memcache hit read (what the round-trip floor reads)
        self.hit_keys: List[str] = []
        self.hooked_rt = sessionmaker(self.plain_engine)
        _install_round_trip(self.hooked_rt, client, lambda: self.hit_keys)
        _install_hook_floor(self.hooked_rt)
        self.dogpile = None
        self.dogpile_skipped: Optional[str] = None
        try:
            dq = dogpile_example.load(log)
            self.dogpile_region = f"bench_{name}"
            self.dogpile_mod = dq
            self.dogpile = sessionmaker(self.plain_engine)
            dq.ORMCache(dogpile_example.regions(address, [self.dogpile_region])
                        ).listen_on_session(self.dogpile)
        except dogpile_example.Skipped as exc:
            self.dogpile_skipped = f"skipped: {exc}"
        self._naive_get: Dict[int, str] = {}
        self._naive_top5 = f"bench:naive:{name}:top5"

    # -- warming ------------------------------------------------------------
    def warm(self, which=("naive", "cached", "dogpile")) -> None:
        """Fill the caches the hit variants ``which`` read (one miss each), idempotent.

        The naive entries are always written (their keys are needed to build the ops).
        """
        from sqla_memcache.demo.models import Film
        client = self.client
        with self.plain() as s:
            for pk in PKS:
                film = s.get(Film, pk)
                s.expunge(film)
                key = f"bench:naive:{self.name}:film:{pk}"
                client.set(key, pickle.dumps(film, pickle.HIGHEST_PROTOCOL))
                self._naive_get[pk] = key
            rows = s.scalars(top5_statement()).all()
            s.expunge_all()
            client.set(self._naive_top5, pickle.dumps(rows, pickle.HIGHEST_PROTOCOL))
        for pk in PKS if "cached" in which else ():
            with self.cached() as s:
                s.get(Film, pk)
        with self.cached() as s:  # the engine's write capture is installed by now
            s.get(Film, PKS[0])
        for factory in (self.hooked, self.hooked_rt):
            for pk in PKS:  # the hook floors' answers (they answer from memory what they ran once)
                with factory() as s:
                    s.get(Film, pk)
            with factory() as s:
                s.scalars(top5_statement()).all()
        if self.dogpile is not None and "dogpile" in which:
            for pk in PKS:
                with self.dogpile() as s:
                    s.get(Film, pk, options=[self.dogpile_mod.FromCache(self.dogpile_region)])

    # -- session.get(Film, pk) --------------------------------------------------
    def get_ops(self) -> Dict[str, Callable[[], bool]]:
        """``{"db", "cached", "naive"[, "dogpile"], "db_captured"}``: each op returns True when right."""
        from sqla_memcache.demo.models import Film
        get_raw = self.client.get
        loads = pickle.loads
        naive_keys = self._naive_get

        def session_get(factory, options=None):
            pks = itertools.cycle(PKS)

            def op():
                pk = next(pks)
                with factory() as s:
                    film = s.get(Film, pk, options=options) if options else s.get(Film, pk)
                    film.title
                    return film.film_id == pk
            return op

        def naive():
            pks = itertools.cycle(PKS)

            def op():
                pk = next(pks)
                with self.plain() as s:
                    film = s.merge(loads(get_raw(naive_keys[pk])), load=False)
                    film.title
                    return film.film_id == pk
            return op

        ops = {"db": session_get(self.plain), "cached": session_get(self.cached),
               "naive": naive(), "hook_floor": session_get(self.hooked),
               "hook_floor_rt": self._reading_hit_keys(session_get(self.hooked_rt), session_get(self.cached))}
        if self.dogpile is not None:
            ops["dogpile"] = session_get(
                self.dogpile, [self.dogpile_mod.FromCache(self.dogpile_region)])
        ops["db_captured"] = session_get(self.captured)
        return ops

    def _reading_hit_keys(self, op: Callable[[], object], hit: Callable[[], object]) -> Callable[[], object]:
        """``op`` (a round-trip floor), its keys set to those one sqla_memcache ``hit`` reads."""
        def keys_of_hit() -> List[str]:
            held = self.orm_cache.held
            hit()  # a hit moves its held entry to the end
            recent = held.keys()[-1:]
            entry = held.get(recent[0]) if recent else None
            if entry is None:
                raise RuntimeError("the sqla_memcache hit held no entry: no keys for the round-trip floor")
            return list(entry.tag)
        fixed: List[str] = []

        def run():
            if not fixed:
                fixed.extend(keys_of_hit())
            self.hit_keys = fixed
            return op()
        return run

    # -- top-5 query ----------------------------------------------------------------
    def top5_ops(self) -> Dict[str, Callable[[], int]]:
        """``{"db", "fromcache", "naive"[, "dogpile"], "db_captured"}``: each op returns the row count."""
        from sqla_memcache.orm import FromCache
        get_raw = self.client.get
        loads = pickle.loads
        key = self._naive_top5

        def query(factory, option_factory=None):
            def op():
                with factory() as s:
                    option = option_factory() if option_factory else None
                    films = s.scalars(top5_statement(option)).all()
                    for f in films:
                        f.title
                    return len(films)
            return op

        def naive():
            with self.plain() as s:
                films = [s.merge(f, load=False) for f in loads(get_raw(key))]
                for f in films:
                    f.title
                return len(films)

        ops = {"db": query(self.plain), "fromcache": query(self.cached, lambda: FromCache(expire=600)),
               "naive": naive, "hook_floor": query(self.hooked),
               "hook_floor_rt": self._reading_hit_keys(query(self.hooked_rt),
                                                        query(self.cached, lambda: FromCache(expire=600)))}
        if self.dogpile is not None:
            dq, region = self.dogpile_mod, self.dogpile_region
            ops["dogpile"] = query(self.dogpile, lambda: dq.FromCache(region))
        ops["db_captured"] = query(self.captured)
        return ops

    # -- fromcache_overhead -----------------------------------------------------------
    def overhead_ops(self) -> Tuple[Dict[str, Callable[[], int]], Callable[[], None]]:
        """The ``fromcache_overhead`` variants and a function closing their shared session."""
        get_raw = self.client.get
        loads = pickle.loads
        key = self._naive_top5
        top5 = self.top5_ops()

        def bare():
            films = loads(get_raw(key))
            for f in films:
                f.title
            return len(films)

        from sqla_memcache.orm import FromCache
        shared = {"session": None}

        def fromcache_same_session():
            s = shared["session"]
            if s is None:
                s = shared["session"] = self.cached()
            films = s.scalars(top5_statement(FromCache(expire=600))).all()
            for f in films:
                f.title
            return len(films)

        def close():
            if shared["session"] is not None:
                shared["session"].close()

        return ({"bare": bare, "fromcache": top5["fromcache"], "bare_merge": top5["naive"],
                 "fromcache_same_session": fromcache_same_session}, close)

    def close(self) -> None:
        self.plain_engine.dispose()


class OrmBench:
    def __init__(self, server, mysql_url: Optional[str] = None,
                 log: Callable[[str], None] = print) -> None:
        self.server = server
        self.mysql_url = mysql_url
        self.log = log
        self.tmpdir = tempfile.mkdtemp(prefix="sqla_memcache_bench_")
        self.engines: list = []
        self.clients: list = []
        self.closers: list = []
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

        def base_of(w: str) -> str:
            return w if w == "fromcache_overhead" else w.rsplit("_", 1)[0]

        def unavailable(w: str, title: str, reason: str) -> Prepared:
            base = base_of(w)
            p = Prepared(w, title, "op", size(base), "orm",
                         "bare" if base == "fromcache_overhead" else "db", {})
            p.unavailable = {"all variants": reason}
            return p

        try:
            from sqlalchemy import select  # noqa: F401  (availability check)
            from sqla_memcache.orm import FromCache, ORMCache  # noqa: F401
            from sqla_memcache.demo.models import Film  # noqa: F401
        except Exception as exc:
            reason = f"ORM layer not importable: {type(exc).__name__}: {exc}"
            return [unavailable(w, _titles(base_of(w)), reason) for w in wanted], {"import": reason}

        client, client_name = self._client()
        self.notes["client"] = f"ORM cache client: {client_name}."
        prepared: List[Prepared] = []
        counters: List[_Counter] = []
        for db in ("mariadb", "sqlite"):
            cases = [w for w in wanted if w.endswith("_" + db)]
            if db == "sqlite" and "fromcache_overhead" in wanted:
                cases.append("fromcache_overhead")
            if not cases:
                continue
            try:
                engine = self._engine(db)
            except Exception as exc:
                reason = f"{db} unavailable: {type(exc).__name__}: {str(exc)[:120]}"
                self.log(f"  {reason}")
                for w in cases:
                    title = _titles(base_of(w)) + ("" if w == "fromcache_overhead" else f", {db}")
                    prepared.append(unavailable(w, title, reason))
                continue
            ctx = Contenders(engine, client, self.server.address, db, self.log)
            self.closers.append(ctx.close)
            counter = _Counter(engine, ctx.plain_engine)
            counters.append(counter)
            if ctx.dogpile_skipped:
                self.notes["dogpile"] = f"dogpile example {ctx.dogpile_skipped}"
            else:
                import sqlalchemy
                self.notes["dogpile"] = (
                    f"dogpile: examples/dogpile_caching/caching_query.py from the SQLAlchemy "
                    f"{sqlalchemy.__version__} sdist, region dogpile.cache.pymemcache on the "
                    "same memcached, key mangler dogpile.cache.util.sha1_mangle_key.")
            ctx.warm()
            if f"orm_get_{db}" in cases:
                prepared.append(self._case("orm_get", db, size("orm_get"), ctx.get_ops(), ctx,
                                           counter, lambda r: r is True))
            if f"orm_top5_{db}" in cases:
                prepared.append(self._case("orm_top5", db, size("orm_top5"), ctx.top5_ops(), ctx,
                                           counter, lambda r: r == 5))
            if "fromcache_overhead" in cases:
                variants, close = ctx.overhead_ops()
                self.closers.append(close)
                p = Prepared("fromcache_overhead", _titles("fromcache_overhead"), "op",
                             size("fromcache_overhead"), "orm", "bare", variants,
                             labels={"bare": "pickle.loads(client.get(key)), no session",
                                     "fromcache": "FromCache hit, fresh session",
                                     "bare_merge": "bare + merge(load=False), fresh session (naive)",
                                     "fromcache_same_session": "FromCache hit, one session reused"})
                prepared.append(self._finish(p, counter, {k: (lambda r: r == 5) for k in variants}))
        for counter in counters:
            counter.close()
        order = {w: i for i, w in enumerate(wanted)}
        prepared.sort(key=lambda p: order.get(p.name, 99))
        return prepared, self.notes

    def _case(self, base: str, db: str, n: int, ops: Dict[str, Callable], ctx: Contenders,
              counter: _Counter, check: Callable) -> Prepared:
        labels = dict(LABELS[base], db=f"{db}, no cache",
                      db_captured=f"{db}, no cache, on the engine sqla_memcache captures")
        p = Prepared(f"{base}_{db}", f"{_titles(base)}, {db}", "op", n, "orm", "db", ops,
                     labels=labels)
        if ctx.dogpile_skipped:
            p.unavailable["dogpile"] = ctx.dogpile_skipped
        return self._finish(p, counter, {k: check for k in ops})

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
        stale = [k for k in sql if k not in (p.baseline, "db_captured") and sql[k]]
        if stale:
            p.notes += f" WARNING: {', '.join(stale)} still ran SQL on a warm cache."
        return p

    def close(self) -> None:
        for close in self.closers:
            close()
        for engine in self.engines:
            engine.dispose()
        for client in self.clients:
            try:
                client.disconnect_all()
            except Exception:
                pass
        shutil.rmtree(self.tmpdir, ignore_errors=True)
