"""What an :class:`~.cache.ORMCache` tells its user: counters, hooks and rate-limited outage warnings.

* :class:`CacheStats` counts hits, misses (by reason), stores, invalidations
  and errors in this process;
* :class:`Hooks` calls user functions on ``hit``, ``miss``, ``store``,
  ``invalidate`` and ``error`` (``cache.on_hit(fn)`` ...); a hook that raises
  is logged and never breaks a query;
* :class:`OutageLog` turns a memcached outage into one WARNING when it starts
  and one INFO line with the count when memcached answers again, instead of a
  warning per query.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional, Sequence

log = logging.getLogger("sqla_memcache.orm")

#: why a cacheable read did not hit
MISS_REASONS = (
    "absent",  # no entry (never stored, expired, evicted, or undecodable)
    "version_moved",  # an entry, but a version it depends on changed (or is unknown after an outage)
    "dirty_transaction",  # the transaction has written: the cache is bypassed until it ends
    "uncacheable",  # the statement or its result cannot be cached safely (see the DEBUG line)
    "error",  # memcached failed
    "refresh",  # populate_existing or a refresh: the database was asked on purpose
    "disabled",  # ORMCache(enabled=False) or SQLA_MEMCACHE_DISABLED
)
EVENT_KINDS = ("hit", "miss", "store", "invalidate", "error")


@dataclass
class CacheStats:
    """Counters of one :class:`ORMCache` (process-local, approximate under threads)."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    invalidations: int = 0
    errors: int = 0
    #: misses by reason (see :data:`MISS_REASONS`)
    miss_reasons: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(MISS_REASONS, 0))

    def miss(self, reason: str) -> None:
        self.misses += 1
        self.miss_reasons[reason] = self.miss_reasons.get(reason, 0) + 1

    def as_dict(self) -> Dict[str, int]:
        """Flat counters: ``hits``, ..., and ``misses_<reason>`` per reason."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "miss_reasons"}
        out.update(("misses_" + reason, count) for reason, count in self.miss_reasons.items())
        return out

    def reset(self) -> None:
        for f in fields(self):
            if f.name != "miss_reasons":
                setattr(self, f.name, 0)
        self.miss_reasons = dict.fromkeys(MISS_REASONS, 0)


@dataclass(frozen=True)
class CacheEvent:
    """What a hook receives. ``key``: the entry key (hit, miss, store); ``reason``: a miss reason;
    ``keys``: the version keys bumped (invalidate); ``error``: the exception (error)."""

    kind: str
    key: Optional[str] = None
    reason: Optional[str] = None
    keys: Sequence[str] = ()
    error: Optional[BaseException] = None


class Hooks:
    """User functions per event kind; each is called with a :class:`CacheEvent`."""

    def __init__(self) -> None:
        self._fns: Dict[str, List[Callable[[CacheEvent], Any]]] = {kind: [] for kind in EVENT_KINDS}
        self.active = False

    def add(self, kind: str, fn: Callable[[CacheEvent], Any]) -> Callable[[CacheEvent], Any]:
        if kind not in self._fns:
            raise ValueError("unknown cache event %r (one of %s)" % (kind, ", ".join(EVENT_KINDS)))
        if not callable(fn):
            raise TypeError("a cache hook must be callable, got %r" % (fn,))
        self._fns[kind].append(fn)
        self.active = True
        return fn

    def fire(self, kind: str, **details: Any) -> None:
        fns = self._fns[kind]
        if not fns:
            return
        event = CacheEvent(kind, **details)
        for fn in fns:
            try:
                fn(event)
            except Exception:  # a user's hook must never break a query
                log.warning("cache %s hook %r raised", kind, fn, exc_info=True)


class OutageLog:
    """One WARNING when memcached starts failing, one INFO line with the count when it answers again."""

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self.failures = 0
        self._lock = threading.Lock()

    def failed(self, message: str, *args: Any) -> None:
        with self._lock:
            self.failures += 1
            first = self.failures == 1
        if first:
            self.log.warning(message + " (further failures are counted until memcached answers again)", *args)
        else:
            self.log.debug(message, *args)

    def answered(self) -> None:
        if not self.failures:
            return
        with self._lock:
            count, self.failures = self.failures, 0
        if count:
            self.log.info("memcached answers again after %d failed cache operation(s)", count)
