"""What an :class:`~.cache.ORMCache` tells its user: counters, hooks and rate-limited outage warnings.

* :class:`CacheStats` counts hits, misses (by reason), stores, invalidations
  and errors in this process;
* :class:`Hooks` calls user functions on ``hit``, ``miss``, ``store``,
  ``invalidate`` and ``error`` (``cache.on_hit(fn)`` ...); a hook that raises
  is logged and never breaks a query;
* :class:`OutageLog` turns a server's outage into one WARNING naming it when
  it starts and one INFO line with the count when it answers again, instead of
  a warning per query; each server's outage is logged on its own.
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


def server_name(host: Any) -> str:
    """``host:port`` (or ``unix:/path``) of one server object of a client, for log lines."""
    label = getattr(host, "label", None)
    if isinstance(label, str):
        return label
    # python-memcached's _Host: "inet:host:port" plus " (dead until N)" while dead
    return str(host).split(" (dead", 1)[0]


def client_servers(client: Any) -> List[Any]:
    """The server objects of ``client``: both clients' of the async facade (``aio.py``), whose
    ``AsyncClient`` has server objects (and dead marks) of its own."""
    found = list(getattr(client, "servers", ()) or ())
    other = getattr(client, "async_client", None)
    if other is not None:
        found += list(getattr(other, "servers", ()) or ())
    return found


#: the name failures go under when no server of the client is marked dead
UNATTRIBUTED = "memcached"


class OutageLog:
    """Outage logging rate-limited per server: one WARNING naming a server when the cache's calls
    to it start failing, one INFO line with the count when it answers again.

    A failure is attributed to the client's servers that are marked dead at that
    moment (a refused connection or a timeout marks a server dead); a failure with
    no server marked dead (a client that raised, say) goes under
    :data:`UNATTRIBUTED`. A server counts as back once it is no longer marked dead
    when a later cache operation succeeds; its count is how many failed cache
    operations it was blamed for meanwhile (each failed read was answered by the
    database). Another server's outage, even during the first, is its own warning.
    """

    def __init__(self, logger: logging.Logger, client: Any = None) -> None:
        self.log = logger
        self._client = client
        #: server name -> failed cache operations since its outage began
        self._down: Dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def failures(self) -> int:
        """Failed operations counted in the outages still open (0 when memcached answers)."""
        return sum(self._down.values())

    def dead_servers(self) -> List[str]:
        """Names of the client's servers marked dead right now."""
        return sorted({server_name(h) for h in client_servers(self._client) if getattr(h, "deaduntil", 0)})

    def failed(self, message: str, *args: Any) -> None:
        """Count one failed cache operation against the servers marked dead; WARNING for each
        server whose outage starts with it, DEBUG otherwise."""
        blamed = self.dead_servers() or [UNATTRIBUTED]
        with self._lock:
            new = [name for name in blamed if name not in self._down]
            for name in blamed:
                self._down[name] = self._down.get(name, 0) + 1
        for name in new:
            if name == UNATTRIBUTED:
                self.log.warning(message + " (further failures are counted until memcached answers again)", *args)
            else:
                self.log.warning("memcached %s is not answering; the ORM cache answers from the database "
                                 "(further failures are counted until it answers again): " + message, name, *args)
        if not new:
            self.log.debug(message, *args)

    def answered(self) -> None:
        """A cache operation succeeded: close the outages of servers no longer marked dead."""
        if not self._down:
            return
        dead = set(self.dead_servers())
        with self._lock:
            back = [(name, self._down.pop(name)) for name in list(self._down) if name not in dead]
        for name, count in back:
            if name == UNATTRIBUTED:
                self.log.info("memcached answers again after %d failed cache operation(s)", count)
            else:
                self.log.info("memcached %s answers again after %d failed cache operation(s) "
                              "(reads were answered from the database meanwhile)", name, count)
