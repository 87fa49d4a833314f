"""``@cache.memoize(tables=[Film], expire=60)``: cache a function's result until those tables change.

The use case of dogpile's ``cache_on_arguments`` and cacheops' ``cached_as``,
invalidated by the same version counters as query entries, so a commit that
writes ``Film`` (by any path the write capture sees) makes every memoized
result depending on it a miss:

1. one ``get_multi`` reads the entry (keyed by the function and its
   arguments) and the tables' version counters (plus the namespace
   generation);
2. a hit needs every tagged counter unchanged;
3. on a miss the counters are read (created when missing) *before* the
   function runs, so a write committed while it runs can never leave its old
   result current -- the same ordering that makes query entries race-free.

Arguments must have a stable rendering (``keys.render_value``: numbers,
strings, bytes, None, tuples/lists of those, enums, mapped classes); other
arguments call the function uncached (DEBUG log). Results must pickle.
"""
from __future__ import annotations

import functools
import logging
import pickle
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, Optional, TypeVar

from sqlalchemy import inspect

from . import keys
from .tables import own_tables

if TYPE_CHECKING:  # pragma: no cover
    from .store import EntryStore as ORMCache

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
#: the entry format of memoized results: (MEMO_FORMAT, tag, value)
MEMO_FORMAT = "m1"


def _table_names(tables: Iterable[Any]) -> List[str]:
    names: List[str] = []
    for table in tables:
        if isinstance(table, str):
            names.append(table)
        elif isinstance(table, type):
            names.extend(sorted(own_tables(inspect(table))))
        elif hasattr(table, "fullname"):
            names.append(table.fullname)
        else:
            raise TypeError("memoize(tables=...) takes mapped classes, Table objects or table names, got %r"
                            % (table,))
    if not names:
        raise ValueError("memoize() needs the tables the function reads (tables=[Film, ...])")
    return names


def memoize(cache: "ORMCache", tables: Iterable[Any], expire: Optional[int] = None,
            namespace: Optional[str] = None) -> Callable[[F], F]:
    """See :meth:`ORMCache.memoize`."""
    version_keys = sorted(set(cache.table_keys(_table_names(tables)))) + [cache.generation_key]

    def decorate(fn: F) -> F:
        name = namespace or "%s.%s" % (fn.__module__, fn.__qualname__)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not cache.enabled:
                return fn(*args, **kwargs)
            try:
                rendered = keys.render_value((args, tuple(sorted(kwargs.items()))))
            except keys.UnstableKey as exc:
                log.debug("memoized %s called with arguments without a stable rendering (%s); not cached",
                          name, exc)
                cache.miss(None, "uncacheable")
                return fn(*args, **kwargs)
            key = cache.key("m", "%s:%s" % (name, keys.digest(rendered)))
            cache.retry_undelivered()
            found = cache.fetch(key, version_keys)
            if found is None:
                cache.miss(key, "error")
                return fn(*args, **kwargs)
            entry = _decode(found.get(key))
            if entry is not None and cache.is_current(entry[0], found):
                cache.hit(key)
                return entry[1]
            cache.miss(key, "absent" if entry is None else "version_moved")
            versions = cache.ensure_versions(version_keys, found)  # read before the function runs
            value = fn(*args, **kwargs)
            if versions is not None:
                _store(cache, key, versions, value, expire)
            return value

        wrapper.invalidate = lambda: cache.bump(version_keys[:-1])  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _decode(raw: Any) -> Any:
    if not isinstance(raw, (bytes, bytearray)):
        return None
    try:
        fmt, tag, value = pickle.loads(raw)
    except Exception:
        log.warning("undecodable memoized entry ignored", exc_info=True)
        return None
    if fmt != MEMO_FORMAT or not isinstance(tag, dict) or not tag:
        return None
    return tag, value


def _store(cache: "ORMCache", key: str, tag: Any, value: Any, expire: Optional[int]) -> None:
    if cache.unknown(tag):
        return
    try:
        blob = pickle.dumps((MEMO_FORMAT, tag, value), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        log.debug("memoized result for %s cannot be pickled (%s); not cached", key, exc)
        return
    if cache._call("set", cache.client.set, key, blob, time=cache.expire if expire is None else expire):
        cache.stats.stores += 1
        if cache.hooks.active:
            cache.hooks.fire("store", key=key)
