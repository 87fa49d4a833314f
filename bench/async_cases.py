"""asyncio cases: ``AsyncClient`` against the blocking ``Client``, an installed asyncio peer, and asyncio's floor.

Every op is a *batch* run to completion: a coroutine doing ``BATCH`` calls,
started with one ``run_until_complete`` on a loop kept for the whole run (the
blocking client runs the same batch as a plain loop), so each op's figures
divided by the batch size are per call and the loop entry is amortised.

* ``async_get``: sequential gets of a 100-byte value -- ``sqla_memcache``
  (blocking ``Client``, the baseline), ``sqla_memcache_async``
  (``AsyncClient``), ``aiomcache`` when it imports (``pip install
  aiomcache``; never vendored), and ``asyncio_floor``: a bare
  ``asyncio.Protocol`` writing ``get`` and waking on the first chunk, no
  parsing -- what any asyncio client pays at least; and, when uvloop is
  installed (``pip install uvloop``; uvicorn runs it when it is there), the
  same three on a uvloop event loop (``*_uvloop``);
* ``async_get_multi``: sequential ``get_multi`` of 100 keys;
* ``async_get_concurrent``: the batch as ``BATCH`` concurrent tasks (the
  loop amortises its wake-ups over many sockets; baseline ``AsyncClient``);
* ``async_session_hit``: an ``AsyncSession`` (SQLite via aiosqlite) running
  the top-5 query -- ``db`` (no cache) vs ``fromcache`` (an ``ORMCache`` with
  ``async_client=``, every query a hit), each query in a fresh session.

Registered from ``runner._run`` (``AsyncBench``); skipped with a reason when
a piece is missing (greenlet, aiosqlite).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Optional

from .cases import VALUE_100
from .runner import Prepared

BATCH = 50
MULTI_KEYS = [("am%03d" % i) for i in range(100)]


class _FloorProtocol(asyncio.Protocol):
    """One ``get`` in flight; the waiter wakes on the first chunk (the floor reads no further)."""

    def __init__(self) -> None:
        self.waiter: Optional[asyncio.Future] = None
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)


class AsyncBench:
    """Clients, loop and databases of the asyncio cases; :meth:`close` releases them."""

    def __init__(self, server: Any, log: Callable[[str], None] = print) -> None:
        self.server = server
        self.log = log
        self.loop = asyncio.new_event_loop()
        #: a uvloop event loop for the ``*_uvloop`` variants, or why there is none
        self.uvloop: Any = None
        self.uvloop_missing = ""
        try:
            import uvloop  # type: ignore[import-not-found]

            self.uvloop = uvloop.new_event_loop()
        except Exception as exc:  # not installed: reported as unavailable
            self.uvloop_missing = "uvloop not installed (pip install uvloop): %s" % exc
        self.tmpdir = tempfile.mkdtemp(prefix="sqla_memcache_abench_")
        self._closers: List[Callable[[], Any]] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    # -- variants ---------------------------------------------------------
    def _clients(self) -> Dict[str, Any]:
        from sqla_memcache import AsyncClient, Client

        address = "%s:%d" % (self.server.host, self.server.port)
        out: Dict[str, Any] = {"sqla_memcache": Client([address]), "sqla_memcache_async": AsyncClient([address])}
        self._closers.append(lambda: self.run(out["sqla_memcache_async"].close()))
        try:
            import aiomcache  # type: ignore[import-not-found]

            out["aiomcache"] = aiomcache.Client(self.server.host, self.server.port)
            self._closers.append(lambda: self.run(out["aiomcache"].close()))
        except Exception as exc:  # not installed: reported as unavailable
            out["aiomcache"] = exc
        transport, protocol = self.run(self.loop.create_connection(_FloorProtocol, self.server.host, self.server.port))
        out["asyncio_floor"] = protocol
        self._closers.append(transport.close)
        uv = self.uvloop
        if uv is not None:
            out["sqla_memcache_uvloop"] = AsyncClient([address])
            self._closers.append(lambda: uv.run_until_complete(out["sqla_memcache_uvloop"].close()))
            if not isinstance(out["aiomcache"], Exception):
                out["aiomcache_uvloop"] = aiomcache.Client(self.server.host, self.server.port)
                self._closers.append(lambda: uv.run_until_complete(out["aiomcache_uvloop"].close()))
            transport, protocol = uv.run_until_complete(
                uv.create_connection(_FloorProtocol, self.server.host, self.server.port))
            out["uvloop_floor"] = protocol
            self._closers.append(transport.close)
        return out

    def prepare(self, scale: float, ops: Optional[int], only: Optional[List[str]]) -> List[Prepared]:
        clients = self._clients()
        sync, aio = clients["sqla_memcache"], clients["sqla_memcache_async"]
        sync.set("ag", VALUE_100)
        sync.set_multi({k: VALUE_100 for k in MULTI_KEYS})
        size = lambda full: ops or max(8, int(full * scale))
        loop = self.loop
        prepared: List[Prepared] = []
        want_multi = {k: VALUE_100 for k in MULTI_KEYS}

        def case(name: str, title: str, unit: str, n: int, baseline: str, kind: str = "client") -> Optional[Prepared]:
            if only and name not in only:
                return None
            p = Prepared(name, title, unit, n, kind, baseline, {})
            prepared.append(p)
            return p

        def add(p: Optional[Prepared], name: str, label: str, op: Callable[[], Any], check: Callable[[Any], bool]) -> None:
            if p is None:
                return
            p.labels[name] = label
            try:
                if not check(op()):
                    raise AssertionError("wrong result")
                p.variants[name] = op
            except Exception as exc:
                p.unavailable[name] = "%s: %s" % (type(exc).__name__, str(exc)[:160])

        peer = clients["aiomcache"]

        # -- sequential gets ------------------------------------------------
        p = case("async_get", "get 100 B, %d sequential calls per op" % BATCH, "%d-get op" % BATCH, size(400),
                 "sqla_memcache")
        add(p, "sqla_memcache", "sqla_memcache.Client", lambda: [sync.get("ag") for _ in range(BATCH)],
            lambda r: r == [VALUE_100] * BATCH)

        def gets_on(ev: Any, name: str, label: str, client: Any, key: Any) -> None:
            async def batch() -> List[Any]:
                return [await client.get(key) for _ in range(BATCH)]

            add(p, name, label, lambda: ev.run_until_complete(batch()), lambda r: r == [VALUE_100] * BATCH)

        def floor_on(ev: Any, name: str, label: str, floor: Any) -> None:
            async def batch() -> List[Any]:
                out = []
                for _ in range(BATCH):
                    floor.waiter = ev.create_future()
                    floor.transport.write(b"get ag\r\n")
                    out.append(await floor.waiter)
                return out

            add(p, name, label, lambda: ev.run_until_complete(batch()),
                lambda r: len(r) == BATCH and all(c.startswith(b"VALUE ag ") for c in r))

        gets_on(loop, "sqla_memcache_async", "sqla_memcache.AsyncClient", aio, "ag")
        if isinstance(peer, Exception):
            if p is not None:
                p.unavailable["aiomcache"] = "not installed (pip install aiomcache): %s" % peer
        else:
            gets_on(loop, "aiomcache", "aiomcache.Client", peer, b"ag")
        floor_on(loop, "asyncio_floor", "bare asyncio.Protocol (no parsing)", clients["asyncio_floor"])
        uv = self.uvloop
        if uv is None:
            if p is not None:
                for name in ("sqla_memcache_uvloop", "uvloop_floor"):
                    p.unavailable[name] = self.uvloop_missing
        else:
            gets_on(uv, "sqla_memcache_uvloop", "sqla_memcache.AsyncClient on uvloop", clients["sqla_memcache_uvloop"],
                    "ag")
            if "aiomcache_uvloop" in clients:
                gets_on(uv, "aiomcache_uvloop", "aiomcache.Client on uvloop", clients["aiomcache_uvloop"], b"ag")
            floor_on(uv, "uvloop_floor", "bare asyncio.Protocol on uvloop (no parsing)", clients["uvloop_floor"])
        if p is not None:
            p.notes = ("Per op: %d calls. asyncio_floor (uvloop_floor) is the least an asyncio client can cost "
                       "per get on that event loop." % BATCH)

        # -- get_multi ---------------------------------------------------------
        p = case("async_get_multi", "get_multi of 100 keys x 100 B, 5 sequential calls per op", "5-get_multi op",
                 size(200), "sqla_memcache")
        add(p, "sqla_memcache", "sqla_memcache.Client", lambda: [sync.get_multi(MULTI_KEYS) for _ in range(5)],
            lambda r: r == [want_multi] * 5)

        async def aio_multi() -> List[Any]:
            return [await aio.get_multi(MULTI_KEYS) for _ in range(5)]

        add(p, "sqla_memcache_async", "sqla_memcache.AsyncClient", lambda: loop.run_until_complete(aio_multi()),
            lambda r: r == [want_multi] * 5)
        if not isinstance(peer, Exception):
            wire_keys = [k.encode() for k in MULTI_KEYS]

            async def peer_multi() -> List[Any]:
                return [await peer.multi_get(*wire_keys) for _ in range(5)]

            add(p, "aiomcache", "aiomcache.Client", lambda: loop.run_until_complete(peer_multi()),
                lambda r: r == [tuple([VALUE_100] * 100)] * 5)

        # -- concurrent gets -----------------------------------------------------
        p = case("async_get_concurrent", "get 100 B, %d concurrent tasks per op" % BATCH, "%d gets" % BATCH,
                 size(400), "sqla_memcache_async")

        async def aio_concurrent() -> List[Any]:
            return await asyncio.gather(*(aio.get("ag") for _ in range(BATCH)))

        add(p, "sqla_memcache_async", "sqla_memcache.AsyncClient (pool_size 16)",
            lambda: loop.run_until_complete(aio_concurrent()), lambda r: r == [VALUE_100] * BATCH)
        if not isinstance(peer, Exception):
            async def peer_concurrent() -> List[Any]:
                return await asyncio.gather(*(peer.get(b"ag") for _ in range(BATCH)))

            add(p, "aiomcache", "aiomcache.Client", lambda: loop.run_until_complete(peer_concurrent()),
                lambda r: r == [VALUE_100] * BATCH)

        # -- AsyncSession hit path --------------------------------------------------
        p = case("async_session_hit", "AsyncSession top-5 query (SQLite/aiosqlite), 10 sessions per op",
                 "10-query op", size(100), "db", kind="orm")
        if p is not None:
            try:
                self._session_case(p, aio, sync)
            except Exception as exc:
                p.unavailable["fromcache"] = "%s: %s" % (type(exc).__name__, str(exc)[:160])
        return prepared

    def _session_case(self, p: Prepared, aio: Any, sync: Any) -> None:
        import uuid

        from sqlalchemy import create_engine, select
        from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
        from sqlalchemy.orm import Session

        from sqla_memcache import FromCache, ORMCache
        from sqla_memcache.demo.loader import load_sakila
        from sqla_memcache.demo.models import Film

        path = os.path.join(self.tmpdir, "sakila.db")
        engine = create_engine("sqlite:///" + path)
        load_sakila(engine, progress=None)
        engine.dispose()
        aengine = create_async_engine("sqlite+aiosqlite:///" + path)
        self._closers.append(lambda: self.run(aengine.dispose()))
        plain = async_sessionmaker(aengine, sync_session_class=type("BenchPlain", (Session,), {}))
        cached = async_sessionmaker(aengine, sync_session_class=type("BenchCached", (Session,), {}))
        cache = ORMCache(sync, async_client=aio, namespace="ab" + uuid.uuid4().hex[:8])
        cache.listen_on_session(cached)

        def top5(with_cache: bool) -> Any:
            stmt = select(Film).order_by(Film.rental_rate.desc(), Film.film_id).limit(5)
            return stmt.options(FromCache(expire=600)) if with_cache else stmt

        def make(factory: Any, with_cache: bool) -> Callable[[], Any]:
            async def batch() -> List[Any]:
                out = []
                for _ in range(10):
                    async with factory() as s:
                        out.append([f.title for f in (await s.scalars(top5(with_cache))).all()])
                return out

            return lambda: self.loop.run_until_complete(batch())

        expected = make(plain, False)()
        p.labels.update(db="AsyncSession, no cache", fromcache="AsyncSession + FromCache (AsyncClient)")
        p.variants["db"] = make(plain, False)
        fromcache = make(cached, True)
        fromcache()  # fill
        hits = cache.stats.hits
        if fromcache() != expected or cache.stats.hits - hits != 10:
            raise AssertionError("FromCache under AsyncSession did not hit: %s" % cache.stats)
        p.variants["fromcache"] = fromcache
        p.notes = "Every fromcache query is a hit (checked); each query opens a fresh AsyncSession."

    def close(self) -> None:
        for close in reversed(self._closers):
            try:
                close()
            except Exception:
                pass
        self.loop.close()
        if self.uvloop is not None:
            self.uvloop.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)
