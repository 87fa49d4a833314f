"""Stampede protection: N concurrent misses on one entry run the database query once.

On a miss the loader asks for a *lease* on the entry: ``add`` of a lease key
(``<namespace>:l:<entry key>``) with a short TTL. Exactly one caller's ``add``
succeeds; it runs the query, stores the entry and deletes the lease. The
others poll the entry (one ``get_multi`` of the entry, its version keys and
the lease, with a backoff from 2 ms to 50 ms) and are served as soon as a
current entry appears -- the same hit test as any other read, so waiting can
never return older data than a database read would. They stop waiting and
query the database themselves when the lease disappears without a usable
entry (the winner could not store one), after ``wait`` seconds (the winner is
slow or died; its lease expires after ``wait + 1`` seconds), or at once when
memcached does not answer the ``add`` (an outage never adds latency).

Why ``add`` and not the meta protocol's lease flags (``mg <key> N<ttl>``
answering ``W`` to one caller and ``Z`` to the others): a miss here is
"absent *or* tagged with old version counters", and memcached only knows
about the first; ``add`` also works on every memcached version and through
any python-memcached compatible client.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List

log = logging.getLogger(__name__)

WON = "won"
HELD = "held"
UNAVAILABLE = "unavailable"

_FIRST_POLL = 0.002
_MAX_POLL = 0.05


@dataclass
class StampedeStats:
    """What the guard did (process-local, approximate under threads)."""

    leases: int = 0  #: misses that took the lease (they query the database unless the entry appeared)
    waits: int = 0  #: misses that found the lease taken and waited
    served: int = 0  #: misses served another caller's fresh entry after all (no query)
    fallbacks: int = 0  #: waiters that gave up and queried the database
    unavailable: int = 0  #: misses that could not ask for a lease (memcached down)

    def as_dict(self) -> Dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class StampedeGuard:
    """Configuration and counters of one ``ORMCache``'s stampede protection.

    :param wait: longest time in seconds a miss waits for another caller's
        query; ``0`` disables the protection (every miss queries).
    """

    wait: float = 5.0
    stats: StampedeStats = field(default_factory=StampedeStats)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def enabled(self) -> bool:
        return self.wait > 0

    def count(self, name: str) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)


def lease_key(cache: Any, entry_key: str) -> str:
    """The lease key of an entry (always a valid key: hashed when too long)."""
    return cache.key("l", entry_key)


def acquire(cache: Any, lease: str, ttl: int) -> str:
    """:data:`WON`, :data:`HELD` (someone else has it) or :data:`UNAVAILABLE`."""
    stored = cache._call("add", cache.client.add, lease, secrets.randbits(31), time=ttl)
    if stored is True:
        return WON
    if stored is False:  # NOT_STORED; a failure is 0 or None
        return HELD
    return UNAVAILABLE


def release(cache: Any, lease: str) -> None:
    cache._call("delete", cache.client.delete, lease)


def load_once(
    cache: Any,
    key: str,
    version_keys: List[str],
    found: Dict[str, Any],
    load: Callable[[Dict[str, Any]], Any],
    serve: Callable[[Any], Any],
) -> Any:
    """Answer a miss on ``key``: ``load(found)`` (query and store) at most once among concurrent callers.

    ``found`` is what the caller's lookup read (entry and version keys);
    ``serve(entry)`` turns a current entry into the caller's result.
    """
    guard: StampedeGuard = cache.stampede
    lease = lease_key(cache, key)
    outcome = acquire(cache, lease, int(guard.wait) + 1)
    if outcome == WON:
        guard.count("leases")
        try:
            # The lease may have just been released by a winner that stored the entry
            # after our lookup: look again before querying.
            polled = cache.fetch(key, version_keys)
            if polled is not None:
                entry = cache.decode(polled.get(key))
                if entry is not None and cache.is_current(entry.tag, polled):
                    guard.count("served")
                    return serve(entry)
                found = polled
            return load(found)
        finally:
            release(cache, lease)
    if outcome == UNAVAILABLE:
        guard.count("unavailable")
        return load(found)
    guard.count("waits")
    deadline = time.monotonic() + guard.wait
    pause = _FIRST_POLL
    latest = found
    sleep = getattr(cache.client, "sleep", time.sleep)  # awaits under AsyncSession (orm/aio.py)
    while time.monotonic() < deadline:
        sleep(pause)
        pause = min(pause * 2, _MAX_POLL)
        polled = cache.fetch(key, version_keys + [lease])
        if polled is None:  # memcached failed meanwhile
            break
        latest = polled
        entry = cache.decode(polled.get(key))
        if entry is not None and cache.is_current(entry.tag, polled):
            guard.count("served")
            return serve(entry)
        if polled.get(lease).__class__ is not int:
            # the winner finished without a usable entry (or the key holds something that is
            # no lease of ours: leases are integers)
            break
    guard.count("fallbacks")
    log.debug("no entry for %s after waiting for the lease; querying the database", key)
    # versions read after the wait are still read before this query: a valid tag
    return load({k: v for k, v in latest.items() if k != lease})
