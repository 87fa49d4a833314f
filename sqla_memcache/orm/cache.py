"""``ORMCache``: the memcached side of ORM caching -- entries, version counters, delivery.

Correctness rests on generation counters kept in memcached (see ``keys.py``):

* every entry is stored with the values of the version keys it depends on,
  read *before* its data was read from the database;
* a hit needs every one of those version keys present and unchanged;
* a committed write bumps the version keys of what it wrote (``incr``, or a
  ``set`` to a fresh random value when the key is missing), so an entry read
  before the commit can never match again -- whenever it is stored. Fresh
  values are random 63-bit numbers, so a counter that was evicted and
  re-created never matches an old entry.

A bump that cannot be delivered (server down, timeout) is remembered and
re-sent before every use of the cache; until it is delivered, entries that
depend on that counter are misses and none are stored with it, so a server
that comes back holding old counters and entries cannot serve stale data to
this process. Entries depending only on other counters keep working. The limit: other processes, or this one after a restart, do not
know about the lost bump -- flush the server when it comes back (or configure
the client's reconnect policy to do so) if several processes write.
"""
from __future__ import annotations

import functools
import logging
import pickle
import secrets
import threading
from dataclasses import dataclass, fields
from typing import Any, Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple

from sqlalchemy import inspect
from sqlalchemy.engine import FrozenResult
from sqlalchemy.orm import Mapper

from . import keys, rows
from .placement import without_failover
from .rows import Rows
from .stampede import StampedeGuard
from .tables import compiled_tables, own_tables, table_name

log = logging.getLogger(__name__)

#: 2: the payload is a FrozenResult or, for rows of plain objects, ``rows.Rows``
ENTRY_FORMAT = 2
Tag = Dict[str, int]


@dataclass
class CacheStats:
    """Counters of one :class:`ORMCache` (process-local, approximate under threads)."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    invalidations: int = 0
    errors: int = 0

    def as_dict(self) -> Dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)


@functools.lru_cache(maxsize=1024)
def _base_table_name(mapper: Mapper) -> str:
    return table_name(mapper.base_mapper.local_table)  # type: ignore[arg-type]


def fresh_version() -> int:
    """A random non-zero 63-bit counter start, never equal to an old value in practice."""
    return secrets.randbits(63) or 1


class ORMCache:
    """Caches ORM query results and objects in memcached with race-free invalidation.

    :param client: a :class:`sqla_memcache.Client` (any object with the
        python-memcached API works). The cache uses it through a view that
        never moves a key to another server while its home server is dead.
    :param namespace: prefix of every key (printable ASCII, no ``:``).
    :param expire: default entry lifetime in seconds (``0``: until evicted).
    :param min_compress_len: passed to the client's ``set``.
    :param stampede_wait: concurrent misses of one entry run its query once; the
        others wait up to this many seconds for the entry (``0`` disables, see ``stampede.py``).
    :param async_client: an :class:`sqla_memcache.AsyncClient` on the same servers, awaited
        by ``AsyncSession`` work instead of blocking the event loop (see ``aio.py``);
        ``client`` may also be an ``AsyncClient`` alone.

    Attach it with :meth:`listen_on_session`; then use
    :class:`~sqla_memcache.orm.options.FromCache`,
    :class:`~sqla_memcache.orm.options.RelationshipCache` and
    :class:`~sqla_memcache.orm.mixin.MemcachedORMObject`.

    Do not use it where every read must see the latest committed data of
    another transaction still in flight, or where writes bypass the listening
    sessions (raw SQL, other applications): those writes are invisible to it
    unless reported with :meth:`invalidate_tables`.
    """

    def __init__(
        self,
        client: Any,
        namespace: str = "sqla_memcache",
        expire: int = 0,
        min_compress_len: int = 0,
        stampede_wait: float = 5.0,
        async_client: Any = None,
    ):
        from .aio import hybrid  # AsyncSession support: sync and async clients behind one facade (aio.py)

        #: the client as the cache uses it: keys never move off a dead server (see ``placement.py``)
        self.client = without_failover(hybrid(client, async_client))
        self.namespace = keys.validate_namespace(namespace)
        self.expire = expire
        self.min_compress_len = min_compress_len
        self.stats = CacheStats()
        #: stampede protection (``stampede.py``): concurrent misses of one entry query once
        self.stampede = StampedeGuard(stampede_wait)
        #: version key -> serial of its latest failed bump (a key stays here until a re-send succeeds)
        self._undelivered: Dict[str, int] = {}
        self._failures = 0
        self._lock = threading.Lock()
        self.session_factory: Any = None
        self._store_refused = False
        self._listening: List[Any] = []  # event targets already wired, so a repeat call is harmless
        #: frozenset of tables or mapper -> its version key names (pure functions of the namespace)
        self._names: Dict[Any, List[str]] = {}
        #: statement shape -> version keys (but the row's) its last entry was tagged with (see loader.py)
        self._likely: Dict[Any, Tuple[List[str], FrozenSet[str]]] = {}

    def __repr__(self) -> str:
        return "ORMCache(namespace=%r)" % (self.namespace,)

    # -- session wiring --------------------------------------------------
    def listen_on_session(self, target: Any) -> Any:
        """Attach the read hook and invalidation listeners to ``target`` and return it.

        ``target`` is a ``sessionmaker``, ``scoped_session``, ``Session``
        subclass or instance, or an ``async_sessionmaker``/``AsyncSession``
        (their sync session class is used). A session factory also becomes the
        default of :class:`MemcachedORMObject` methods (the latest call wins).
        """
        from .invalidation import attach

        return attach(self, target)

    # -- keys --------------------------------------------------------------
    def key(self, kind: str, part: str) -> str:
        return keys.make_key(self.namespace, kind, part)

    def table_keys(self, tables: Iterable[str]) -> List[str]:
        """Table version keys of ``tables``, sorted (memoised for frozensets: every hit asks)."""
        if not isinstance(tables, frozenset):
            return [keys.table_version_key(self.namespace, name) for name in sorted(tables)]
        found = self._names.get(tables)
        if found is None:
            found = self._remember(tables, [keys.table_version_key(self.namespace, name) for name in sorted(tables)])
        return list(found)

    def _remember(self, what: Any, names: List[str]) -> List[str]:
        if len(self._names) >= 4096:
            self._names.clear()
        self._names[what] = names
        return names

    def row_version_key(self, mapper: Mapper, identity: Tuple[Any, ...]) -> str:
        """Version key of one row, shared by a class hierarchy (keyed by its base table)."""
        return keys.row_version_key(self.namespace, _base_table_name(mapper), identity)

    def dml_keys(self, tables: Iterable[str]) -> List[str]:
        """DML version keys of ``tables``: bumped when rows changed but which rows is unknown."""
        return [keys.dml_version_key(self.namespace, name) for name in sorted(tables)]

    def dml_version_keys(self, mapper: Mapper) -> List[str]:
        """DML version keys of the mapper's tables (they guard its object entries)."""
        found = self._names.get(mapper)
        if found is None:
            found = self._remember(mapper, self.dml_keys(table_name(t) for t in mapper.tables))
        return list(found)

    # -- reads -------------------------------------------------------------
    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one client call; on an exception log a warning, count it, return None."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # a cache outage must never fail the query
            self.stats.errors += 1
            log.warning("memcached %s failed (%s: %s); answering without the cache", what, type(exc).__name__, exc)
            return None

    def retry_undelivered(self) -> None:
        """Re-send remembered bumps (called before every use of the cache)."""
        if not self._undelivered:
            return
        with self._lock:
            pending = dict(self._undelivered)
        # The keys stay "unknown" while they are re-sent: dropping them first would let
        # another thread trust the returning server's old counter in the meantime.
        self._bump_keys(pending)
        with self._lock:
            for name, serial in pending.items():
                if self._undelivered.get(name) == serial:  # delivered, and no newer failure
                    del self._undelivered[name]
        if self._undelivered:
            log.info("%d invalidation(s) still undelivered", len(self._undelivered))

    def unknown(self, names: Iterable[str]) -> bool:
        """True when any of these version keys has an undelivered bump: its stored value is stale."""
        pending = self._undelivered
        return bool(pending) and any(name in pending for name in names)

    @property
    def pending_invalidations(self) -> int:
        """How many version bumps are waiting to be delivered (0 in normal operation)."""
        return len(self._undelivered)

    def deliver_pending(self) -> bool:
        """Retry undelivered invalidations now; True when none remain.

        They are also retried before every use of the cache; call this from a
        periodic task so that *other* processes stop seeing the old entries
        soon even when this process stays idle.
        """
        self.retry_undelivered()
        return not self._undelivered

    def fetch(self, key: str, version_keys: List[str]) -> Optional[Dict[str, Any]]:
        """One ``get_multi`` of an entry and version keys; None when memcached failed."""
        found = self._call("get_multi", self.client.get_multi, [key] + version_keys)
        return dict(found) if found is not None else None

    def read(self, names: List[str]) -> Optional[Dict[str, Any]]:
        """One ``get_multi`` of version keys; None when memcached failed."""
        found = self._call("get_multi", self.client.get_multi, names)
        return dict(found) if found is not None else None

    def decode(self, raw: Any) -> Optional[Tuple[Tag, Any]]:
        """Unpickle an entry into ``(tag, payload)``; None for foreign or corrupt data."""
        if not isinstance(raw, (bytes, bytearray)):
            return None
        try:
            fmt, tag, payload = pickle.loads(raw)
        except Exception:
            log.warning("undecodable cache entry ignored", exc_info=True)
            return None
        # every entry depends on at least one version key and holds a frozen result
        if fmt != ENTRY_FORMAT or not isinstance(tag, dict) or not tag or not isinstance(payload, (FrozenResult, Rows)):
            log.warning("malformed cache entry ignored")
            return None
        return tag, payload

    def is_current(self, tag: Tag, versions: Mapping[str, Any]) -> bool:
        """True when every version key of ``tag`` is present with the tagged value and none has
        an undelivered bump (its server may still hold the value from before the write)."""
        return not self.unknown(tag) and all(versions.get(name) == value for name, value in tag.items())

    def ensure_versions(self, version_keys: List[str], found: Mapping[str, Any]) -> Optional[Dict[str, int]]:
        """Return current values of ``version_keys``, creating missing ones; None if any is unknown.

        Missing counters are created with ``add`` so a concurrent writer's
        fresh value is never overwritten, then read back. A counter with an
        undelivered bump is unknown.
        """
        if self.unknown(version_keys):
            return None
        versions = {k: found[k] for k in version_keys if isinstance(found.get(k), int)}
        missing = [k for k in version_keys if k not in versions]
        for name in missing:
            self._call("add", self.client.add, name, fresh_version())
        if missing:
            again = self._call("get_multi", self.client.get_multi, missing) or {}
            versions.update({k: v for k, v in again.items() if isinstance(v, int)})
        if len(versions) != len(version_keys):
            self.stats.errors += 1
            log.warning("could not read or create version keys; result not cached")
            return None
        return versions

    def read_epoch(self) -> Optional[int]:
        """The namespace's commit epoch (created when missing); None when memcached failed."""
        name = keys.epoch_key(self.namespace)
        found = self.ensure_versions([name], self._call("get_multi", self.client.get_multi, [name]) or {})
        return None if found is None else found[name]

    def store(
        self, key: str, tag: Tag, payload: Any, expire: Optional[int], min_compress_len: Optional[int] = None
    ) -> bool:
        """Pickle and ``set`` an entry; True when memcached accepted it."""
        if self.unknown(tag):
            return False
        blob = pickle.dumps((ENTRY_FORMAT, tag, rows.encode(payload)), protocol=pickle.HIGHEST_PROTOCOL)
        ok = self._call(
            "set", self.client.set, key, blob, time=self.expire if expire is None else expire,
            min_compress_len=self.min_compress_len if min_compress_len is None else min_compress_len,
        )
        if ok:
            self.stats.stores += 1
        elif not self._store_refused:
            # Entries are pickles stored as bytes: a client whose serde cannot hold bytes
            # (e.g. JSON) refuses every one, so say it once loudly; later refusals at DEBUG.
            self._store_refused = True
            log.warning(
                "memcached refused entry %s (%d bytes): too large for the server, or the client's serde "
                "cannot store bytes (use the pickle or signed serde with ORMCache)", key, len(blob)
            )
        else:
            log.debug("entry %s (%d bytes) not stored", key, len(blob))
        return bool(ok)

    # -- invalidation ------------------------------------------------------
    def bump(self, version_keys: Iterable[str]) -> None:
        """Deliver a committed write: bump the epoch first, then every version key.

        The epoch goes first so a reader that sees any new version also sees
        the new epoch (the REPEATABLE READ guard in ``loader.py`` relies on it).
        Undeliverable bumps are remembered and retried before the next use.
        """
        names = set(version_keys)
        if not names:
            return
        self.stats.invalidations += 1
        self._bump_keys([keys.epoch_key(self.namespace)])
        self._bump_keys(sorted(names))

    def _bump_keys(self, names: Iterable[str]) -> None:
        failed = []
        for name in names:
            if self._call("incr", self.client.incr, name) is not None:
                continue
            # Missing (evicted, never read) or unreachable: a fresh random value
            # invalidates every old tag either way; failure means unreachable.
            if not self._call("set", self.client.set, name, fresh_version()):
                failed.append(name)
        if failed:
            log.warning("could not deliver %d invalidation(s); entries depending on them are bypassed until"
                        " they are delivered", len(failed))
            with self._lock:
                for name in failed:
                    self._failures += 1
                    self._undelivered[name] = self._failures

    def invalidate_tables(self, *tables: str) -> None:
        """Invalidate every entry reading any of ``tables`` (names as in the database)."""
        self.bump(self.table_keys(tables) + self.dml_keys(tables))

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
        self.bump(self.table_keys(own_tables(state.mapper)) + [self.row_version_key(state.mapper, identity)])
