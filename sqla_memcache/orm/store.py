"""``EntryStore``: the memcached side of ORM caching -- entries, version counters, delivery.

It never touches a Session: ``cache.py``'s ``ORMCache`` adds the SQLAlchemy
extension (listeners, write capture, memoize) on top.

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
this process. Entries depending only on other counters keep working. A
background thread probes the server every 0.1 s meanwhile and delivers the
bumps as soon as it answers (``redelivery.py``), so other processes, which do
not know about the lost bump, see the old entries for at most about that long
after the server is back. A process that dies first loses its remembered
bumps: the durable invalidation log (``durable.py``) covers that.

Everything read from memcached is decoded by ``safepickle.py``: entries by an
allow-listed unpickler, counters as integers only.
"""
from __future__ import annotations

import logging
import os
import pickle
import secrets
import threading
import weakref
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, NamedTuple, Optional, Tuple

from sqlalchemy.engine import FrozenResult

from . import keys, rows, safepickle
from .api import ENTRY_FORMAT, Entry, Tag
from .clientcheck import check_client
from .placement import without_failover
from .redelivery import Redeliverer
from .rows import Rows
from .events import CacheStats, Hooks, OutageLog
from .held import HeldEntries
from .keyspace import KeySpace
from .stampede import StampedeGuard
from ..memo import Memo

log = logging.getLogger(__name__)



def _is_counter(value: Any) -> bool:
    """True for a version counter's value: an int (a bool or anything else counts as missing)."""
    return value.__class__ is int


def fresh_version() -> int:
    """A random non-zero 63-bit counter start, never equal to an old value in practice."""
    return secrets.randbits(63) or 1


class _Read(NamedTuple):
    """A version read already done (:meth:`EntryStore.read_begin`)."""

    versions: Optional[Dict[str, Any]]


class EntryStore(KeySpace):
    """Versioned entries of one namespace in memcached: lookups, stores, version bumps.

    The parameters are :class:`~sqla_memcache.orm.cache.ORMCache`'s (documented
    there); ``ORMCache`` adds the SQLAlchemy extension on top of this store.
    Key names come from :class:`~.keyspace.KeySpace`.
    """

    def __init__(
        self,
        client: Any,
        namespace: str = "sqla_memcache",
        expire: int = 0,
        min_compress_len: int = 0,
        stampede_wait: float = 5.0,
        enabled: bool = True,
        held_bytes: int = 16 * 1024 * 1024,
        async_client: Any = None,
        durable_log: bool = False,
    ):
        check_client(client, async_client)  # TypeError now, not a silent no-op cache (see ``clientcheck.py``)
        from .aio import hybrid  # AsyncSession support: sync and async clients behind one facade (aio.py)

        #: the client as the cache uses it: keys never move off a dead server (see ``placement.py``)
        self.client = safepickle.harden(without_failover(hybrid(client, async_client)), client)
        KeySpace.__init__(self, namespace)
        safepickle.warn_if_unsigned(self.client, self.namespace)
        self.expire = expire
        self.min_compress_len = min_compress_len
        self.stats = CacheStats()
        #: False: reads bypass the cache (invalidations are still delivered)
        self.enabled = enabled and os.environ.get("SQLA_MEMCACHE_DISABLED", "").lower() not in ("1", "true", "yes")
        self.hooks = Hooks()
        self._outage = OutageLog(log, self.client)  # per server: the client's dead marks say which
        #: stampede protection (``stampede.py``): concurrent misses of one entry query once
        self.stampede = StampedeGuard(stampede_wait)
        #: version key -> serial of its latest failed bump (a key stays here until a re-send succeeds)
        self._undelivered: Dict[str, int] = {}
        self._failures = 0
        self._lock = threading.Lock()
        #: re-sends undelivered bumps as soon as their server answers (see ``redelivery.py``)
        self.redeliverer = Redeliverer(self)
        self.session_factory: Any = None
        self._store_refused = False
        self._listening: List[Any] = []  # event targets already wired, so a repeat call is harmless
        #: statement shape -> version keys (but the row's) its last entry was tagged with (see loader.py)
        self._likely: Memo[Any, Tuple[List[str], FrozenSet[str]]] = Memo(4096)
        #: record every commit's bumps in its database (``durable.py``) on every engine captured for it
        self.durable_log = durable_log
        #: engine -> its :class:`~.durable.DurableLog`
        self._durable: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
        #: decoded entries kept in this process (``held.py``); ``held_bytes=0`` disables
        self.held = HeldEntries(held_bytes)
        #: the loader's plans of statements read through this cache (``loader.py``), LRU
        self.plans: Memo[Any, Any] = Memo(8192)
        #: what a plain session.get() looks like -> its plan, or loader.UNSTABLE_GUESS (``loader.py``)
        self.guesses: Memo[Any, Any] = Memo(8192)
        self._constructed()

    def _constructed(self) -> None:
        """Called at the end of ``__init__``: where a subclass wires itself (``ORMCache``)."""

    def __repr__(self) -> str:
        return "%s(namespace=%r)" % (type(self).__name__, self.namespace)

    def deliver(self, writes: Any) -> bool:
        """Invalidate what a committed transaction (or autocommit statement) wrote; True when delivered."""
        return self.bump(self.keys_for(writes))

    # -- reads -------------------------------------------------------------
    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one client call; on an exception log a warning, count it, return None."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # a cache outage must never fail the query
            self.error("memcached %s failed (%s: %s); answering without the cache" % (what, type(exc).__name__, exc),
                       exc)
            return None

    def error(self, message: str, exc: Optional[BaseException] = None) -> None:
        """Count an error, log it (once per outage at WARNING) and tell the ``error`` hooks."""
        self.stats.errors += 1
        self._outage.failed("%s", message)
        if self.hooks.active:
            self.hooks.fire("error", error=exc)

    def hit(self, key: str) -> None:
        self.stats.hits += 1
        if self.hooks.active:
            self.hooks.fire("hit", key=key)

    def miss(self, key: Optional[str], reason: str) -> None:
        self.stats.miss(reason)
        log.debug("miss (%s): %s", reason, key)
        if self.hooks.active:
            self.hooks.fire("miss", key=key, reason=reason)

    def retry_undelivered(self, wake: bool = True) -> None:
        """Re-send remembered bumps (called before every use of the cache).

        While some remain, the :class:`~.redelivery.Redeliverer` thread probes
        their servers every 0.1 s and re-sends them as soon as one answers.
        """
        if not self._undelivered:
            return
        if wake:
            self.redeliverer.wake()
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
        """One read of version keys (integers only: anything else is missing); None when memcached failed."""
        read = getattr(self.client, "get_counters", None) or self.client.get_multi
        found = self._call("get_multi", read, names)
        return dict(found) if found is not None else None

    def read_begin(self, names: List[str]) -> Any:
        """:meth:`read` in two halves: the request goes out now; :meth:`read_end` of what
        this returns is what :meth:`read` returns. With a client that cannot send ahead
        (no ``get_counters_begin``), the read happens here, whole."""
        begin = getattr(self.client, "get_counters_begin", None)
        if begin is None:
            return _Read(self.read(names))
        found = self._call("get_multi", begin, names)
        return found if found is not None else _Read(None)

    def read_end(self, pending: Any) -> Optional[Dict[str, Any]]:
        """The versions :meth:`read_begin` sent for: None when memcached failed."""
        if pending.__class__ is _Read:
            return pending.versions  # type: ignore[no-any-return]
        found = self._call("get_multi", pending.result)
        # (get_counters answers a new dict per call: no copy of it)
        return found if found is None or found.__class__ is dict else dict(found)

    @staticmethod
    def read_cancel(pending: Any) -> None:
        """Abandon what :meth:`read_begin` sent (its connection is closed)."""
        if pending.__class__ is not _Read:
            pending.cancel()

    def decode(self, raw: Any, key: Optional[str] = None) -> Optional[Entry]:
        """Unpickle an entry into ``(tag, payload)``; None for foreign or corrupt data.

        With ``key``, a payload every session may share is kept decoded in this
        process (``held.py``): later lookups of ``key`` check its versions only."""
        if not isinstance(raw, (bytes, bytearray)):
            return None
        found = self._decode(raw)
        if found is not None and key is not None:
            self.held.put(key, len(raw), found.tag, found.payload)
        return found

    def _decode(self, raw: Any) -> Optional[Entry]:
        return self.unpack(raw, ENTRY_FORMAT, lambda payload: isinstance(payload, (FrozenResult, Rows)))

    def unpack(self, raw: Any, fmt: str, valid: Callable[[Any], bool]) -> Optional[Entry]:
        """Decode ``raw`` (a ``(fmt, tag, payload)`` pickle) with the allow-listed unpickler into
        ``(tag, payload)``; None for foreign, refused, corrupt or malformed data (logged)."""
        if not isinstance(raw, (bytes, bytearray)):
            return None
        try:
            found_fmt, tag, payload = safepickle.loads(raw)  # allow-listed globals only (see safepickle.py)
        except safepickle.Refused:
            return None  # logged (rate-limited) by safepickle
        except Exception:
            log.warning("undecodable cache entry ignored", exc_info=True)
            return None
        # every entry depends on at least one version key
        if (found_fmt != fmt or not isinstance(tag, dict) or not tag or not valid(payload)
                or not all(_is_counter(v) for v in tag.values())):
            log.warning("malformed cache entry ignored")
            return None
        return Entry(tag, payload)

    def is_current(self, tag: Tag, versions: Mapping[str, Any]) -> bool:
        """True when every version key of ``tag`` is present with the tagged value and none has
        an undelivered bump (its server may still hold the value from before the write)."""
        if self._undelivered and self.unknown(tag):
            return False
        # (every (name, value) of the tag among the versions read: one C-level comparison;
        # tagged values are counters, never None, so a missing version never matches)
        return tag.items() <= versions.items()

    def ensure_versions(self, version_keys: List[str], found: Mapping[str, Any]) -> Optional[Dict[str, int]]:
        """Return current values of ``version_keys``, creating missing ones; None if any is unknown.

        Missing counters are created with ``add`` so a concurrent writer's
        fresh value is never overwritten, then read back. A counter with an
        undelivered bump is unknown.
        """
        if self.unknown(version_keys):
            return None
        versions = {k: found[k] for k in version_keys if _is_counter(found.get(k))}
        missing = [k for k in version_keys if k not in versions]
        occupied = []  # keys holding something that is not a counter (refused on read): missing too
        for name in missing:
            if self._call("add", self.client.add, name, fresh_version()) is False:
                occupied.append(name)
        if missing:
            again = self._call("get_multi", self.client.get_multi, missing) or {}
            versions.update({k: v for k, v in again.items() if _is_counter(v)})
            for name in occupied:
                if name not in versions:
                    # Deleting a counter is what an eviction does (fresh values never match old
                    # tags), so replace the non-counter with a fresh one and read that.
                    log.warning("version key %s holds no integer; replaced with a fresh counter", name)
                    self._call("delete", self.client.delete, name)
                    self._call("add", self.client.add, name, fresh_version())
            if any(name not in versions for name in occupied):
                again = self._call("get_multi", self.client.get_multi, occupied) or {}
                versions.update({k: v for k, v in again.items() if _is_counter(v)})
        if len(versions) != len(version_keys):
            self.error("could not read or create version keys; result not cached")
            return None
        self._outage.answered()
        return versions

    def read_epoch(self) -> Optional[int]:
        """The namespace's commit epoch (created when missing); None when memcached failed."""
        name = keys.epoch_key(self.namespace)
        found = self.ensure_versions([name], self._call("get_multi", self.client.get_multi, [name]) or {})
        return None if found is None else found[name]

    def store(
        self, key: str, tag: Tag, payload: Any, expire: Optional[int], min_compress_len: Optional[int] = None
    ) -> bool:
        """Pickle and ``set`` a query or object entry; True when memcached accepted it."""
        if self.unknown(tag):
            return False
        try:
            encoded = rows.encode(payload)
        except Exception as exc:  # encode only reads loaded attributes; never let it break a query
            log.debug("entry %s cannot be encoded (%s: %s); not cached", key, type(exc).__name__, exc)
            return False
        blob = self.pack(key, ENTRY_FORMAT, tag, encoded)
        if blob is None:
            return False
        self.held.drop(key)
        return self.set_packed(key, tag, blob, expire, min_compress_len)

    @staticmethod
    def pack(key: str, fmt: str, tag: Tag, payload: Any) -> Optional[bytes]:
        """The pickle of ``(fmt, tag, payload)``; None when it cannot be pickled (logged at DEBUG)."""
        try:
            return pickle.dumps((fmt, tag, payload), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # e.g. a loader option holding a lambda: the result cannot be cached
            log.debug("entry %s cannot be pickled (%s: %s); not cached", key, type(exc).__name__, exc)
            return None

    def set_packed(
        self, key: str, tag: Tag, blob: bytes, expire: Optional[int], min_compress_len: Optional[int] = None
    ) -> bool:
        """``set`` a packed entry unless a version of ``tag`` has an undelivered bump; True when
        memcached accepted it (counted, ``on_store`` fired)."""
        if self.unknown(tag):
            return False
        ok = self._call(
            "set", self.client.set, key, blob, time=self.expire if expire is None else expire,
            min_compress_len=self.min_compress_len if min_compress_len is None else min_compress_len,
        )
        if ok:
            self.stats.stores += 1
            if self.hooks.active:
                self.hooks.fire("store", key=key)
        elif self._outage.dead_servers():
            # not a refusal: a server is down (python-memcached-style clients return False then)
            self.error("memcached set of entry %s failed (a server is down); result not cached" % key)
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
    def bump(self, version_keys: Iterable[str]) -> bool:
        """Deliver a committed write: bump the epoch first, then every version key.

        The epoch goes first so a reader that sees any new version also sees
        the new epoch (the REPEATABLE READ guard in ``loader.py`` relies on it).
        Undeliverable bumps are remembered and retried before the next use.
        Returns True when every bump was delivered now.
        """
        names = set(version_keys)
        if not names:
            return True
        self.stats.invalidations += 1
        failed = self._bump_keys([keys.epoch_key(self.namespace)])
        failed += self._bump_keys(sorted(names))
        if self.hooks.active:
            self.hooks.fire("invalidate", keys=sorted(names))
        return not failed

    def _bump_keys(self, names: Iterable[str]) -> List[str]:
        failed = []
        for name in names:
            if self._call("incr", self.client.incr, name) is not None:
                continue
            # Missing (evicted, never read) or unreachable: a fresh random value
            # invalidates every old tag either way; failure means unreachable.
            if not self._call("set", self.client.set, name, fresh_version()):
                failed.append(name)
        if not failed:
            self._outage.answered()
        if failed:
            self.error("could not deliver %d invalidation(s); entries depending on them are bypassed until"
                       " they are delivered" % len(failed))
            with self._lock:
                for name in failed:
                    self._failures += 1
                    self._undelivered[name] = self._failures
            self.redeliverer.wake()
        return failed
