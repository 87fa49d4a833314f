"""``ORMCache``: the SQLAlchemy extension -- an :class:`~.store.EntryStore` plus its listeners.

``store.py`` keeps versioned entries in memcached and never touches a
Session; this facade wires it to SQLAlchemy: the read hook and session
bookkeeping (``invalidation.py``), the engine write capture (``capture.py``),
the mixin's default binding (``mixin.py``), ``memoize`` and configuration.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional

from sqlalchemy import inspect

from . import capture, invalidation, memoize as memoize_module, mixin, plans, scope
from .tables import compiled_tables, own_tables
from .api import ENTRY_FORMAT, Tag
from .configure import from_config as _from_config
from .events import CacheStats
from .store import EntryStore, fresh_version

__all__ = ["ORMCache", "CacheStats", "ENTRY_FORMAT", "Tag", "fresh_version"]


class ORMCache(EntryStore):
    """Caches ORM query results and objects in memcached with race-free invalidation.

    :param client: a :class:`sqla_memcache.Client` (any python-memcached-compatible
        client works; others are refused with a TypeError). The cache uses it
        through a view that never moves a key to another server while its home
        server is dead.
    :param namespace: prefix of every key (printable ASCII, no ``:``).
    :param expire: default entry lifetime in seconds (``0``: until evicted).
    :param min_compress_len: passed to the client's ``set``.
    :param stampede_wait: concurrent misses of one entry run its query once; the
        others wait up to this many seconds for the entry (``0`` disables).
    :param enabled: ``False`` (or ``SQLA_MEMCACHE_DISABLED=1``) turns caching off
        but keeps every code path and keeps delivering invalidations.
    :param async_client: an :class:`sqla_memcache.AsyncClient` on the same servers, awaited
        by ``AsyncSession`` work instead of blocking the event loop (see ``aio.py``);
        ``client`` may also be an ``AsyncClient`` alone.
    :param durable_log: record every commit's version bumps in a table of the
        database it commits to, in the same transaction, for every engine the
        cache captures (see :meth:`enable_durable_log` and ``durable.py``).

    Attach it with :meth:`listen_on_session` (and :meth:`listen_on_engine` for
    Core-only code); then use :class:`~sqla_memcache.orm.options.FromCache`,
    :class:`~sqla_memcache.orm.options.RelationshipCache`,
    :class:`~sqla_memcache.orm.mixin.MemcachedORMObject` and :meth:`memoize`.

    Do not use it where every read must see the latest committed data of
    another transaction still in flight, or where writes bypass the engines it
    listens on (raw DBAPI cursors, other applications, triggers): those writes
    are invisible to it unless reported with :meth:`invalidate_tables`.
    """

    def _constructed(self) -> None:
        # a FromCache on a session no cache listens on is then warned about, not silently uncached
        invalidation.watch_unlistened()

    #: ``ORMCache.from_config(settings, prefix="sqla_memcache.", client=None, async_client=None)``; see ``configure.py``
    from_config = classmethod(_from_config)

    # -- durable invalidation log (``durable.py``) ---------------------------
    def enable_durable_log(self, engine: Any) -> Any:
        """Record the version bumps of every transaction ``engine`` commits in its own database.

        Creates ``sqla_memcache_invalidations`` when missing (call it at
        start-up, before connections are in use) and captures the engine.
        Each committing transaction that wrote anything inserts one row naming
        its version keys, before its DBAPI commit; the writer deletes it once
        the bumps are delivered, and :meth:`start_deliverer` or
        ``sqla-memcache deliver`` deliver rows left behind. Returns the
        :class:`~.durable.DurableLog`.
        """
        from .durable import DurableLog

        engine = getattr(engine, "sync_engine", engine)
        found = self._durable.get(engine)
        if found is None:
            found = self._durable[engine] = DurableLog(self, engine)
            self.listen_on_engine(engine)
        return found

    def deliver_logged(self, engine: Any) -> int:
        """Deliver the log rows of this namespace left in ``engine``'s database; how many were delivered."""
        from .durable import DurableLog

        engine = getattr(engine, "sync_engine", engine)
        durable = self._durable.get(engine) or DurableLog(self, engine)
        return durable.deliver_pending()

    def start_deliverer(self, engine: Any, interval: float = 1.0) -> Any:
        """Start a daemon thread delivering the log rows left in ``engine``'s database every
        ``interval`` seconds (by any process of the namespace); returns it (``.stop()`` ends it)."""
        from .durable import Deliverer, DurableLog

        engine = getattr(engine, "sync_engine", engine)
        durable = self._durable.get(engine) or DurableLog(self, engine)
        return Deliverer(durable, interval).start()

    # -- invalidation by hand -------------------------------------------------
    def invalidate_tables(self, *tables: str) -> None:
        """Invalidate every entry reading any of ``tables`` (names as in the database, ``schema.table``
        where a schema is named; case does not matter)."""
        self.bump(self.table_keys(tables) + self.dml_keys(tables))

    def invalidate_all(self) -> None:
        """Invalidate every entry of the namespace (bumps its generation counter)."""
        self.bump([self._generation_key])

    def delete_entry(self, key: str) -> None:
        """Delete one entry by key (a hint: version bumps are what make entries unreachable)."""
        self._call("delete", self.client.delete, key)

    def invalidate(self, statement: Any) -> None:
        """Invalidate every entry reading a table ``statement`` reads (not only its own entry)."""
        self.invalidate_tables(*compiled_tables(statement))

    def invalidate_class(self, cls: type) -> None:
        """Invalidate every cached object and query result of mapped class ``cls``."""
        self.invalidate_tables(*own_tables(inspect(cls)))

    def invalidate_object(self, obj: Any) -> None:
        """Invalidate one object's cached entry and every query result reading its tables."""
        state = inspect(obj)
        identity = tuple(state.mapper.primary_key_from_instance(obj))
        self.bump(self.table_keys(own_tables(state.mapper)) + self.row_version_keys(state.mapper, identity))

    # -- hooks ----------------------------------------------------------------
    def on_hit(self, fn: Any) -> Any:
        """Call ``fn(event)`` on every hit (``event.key``); usable as a decorator."""
        return self.hooks.add("hit", fn)

    def on_miss(self, fn: Any) -> Any:
        """Call ``fn(event)`` on every miss of a cacheable read (``event.key``, ``event.reason``)."""
        return self.hooks.add("miss", fn)

    def on_store(self, fn: Any) -> Any:
        """Call ``fn(event)`` for every entry stored (``event.key``)."""
        return self.hooks.add("store", fn)

    def on_invalidate(self, fn: Any) -> Any:
        """Call ``fn(event)`` for every delivered invalidation (``event.keys``: the version keys bumped)."""
        return self.hooks.add("invalidate", fn)

    def on_error(self, fn: Any) -> Any:
        """Call ``fn(event)`` on every memcached or cache error (``event.error``, may be None)."""
        return self.hooks.add("error", fn)

    # -- SQLAlchemy -------------------------------------------------------------
    def listen_on_session(self, target: Any) -> Any:
        """Attach the read hook and the write capture to ``target`` and return it.

        ``target`` is a ``sessionmaker``, ``scoped_session``, ``Session``
        subclass or instance, or an ``async_sessionmaker``/``AsyncSession``
        (their sync session class is used). A session factory also becomes the
        default of :class:`MemcachedORMObject` methods (the latest call wins).
        """
        invalidation.attach(self, target)
        factory = invalidation.session_factory(target)
        if factory is not None:
            self.session_factory = factory
            mixin.set_default_binding(self, factory)
        return target

    def listen_on_engine(self, engine: Any, database: Optional[str] = None) -> Any:
        """Capture every write ``engine`` (an Engine or AsyncEngine) executes and return it.

        Sessions listening on the cache install this for the engines they use;
        call it for Core-only code paths, and before any connection of the
        engine is in use. ``database`` names the database in entry keys
        (default: the engine URL without driver and password); give engines
        reading the same database under different URLs (a replica) one name.
        """
        found = capture.capture_for(engine)
        found.add(self)
        if database is not None:
            found.database = database
            scope.forget_database(engine)
        return engine

    def entry_key(self, statement: Any, bind: Any, parameters: Optional[Mapping[str, Any]] = None,
                  key: Optional[str] = None) -> Optional[str]:
        """The key of the entry ``FromCache`` stores for ``statement`` read through ``bind`` (an
        engine) without extra execution options; ``key``: the option's fixed key. None when the
        statement cannot be cached."""
        return plans.query_entry_key(self, statement, bind, parameters, key)

    def memoize(self, tables: Iterable[Any], expire: Optional[int] = None,
                name: Optional[str] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: cache a function's result by its arguments until any of ``tables`` changes.

        ``tables``: mapped classes, ``Table`` objects or table names the function
        reads. ``expire``: seconds (default: the cache's). ``name``: the key prefix
        (default: the function's module and qualified name). The wrapper has an
        ``invalidate()`` method. See ``memoize.py`` for the ordering that keeps it race-free.
        """
        return memoize_module.memoize(self, tables, expire, name)
