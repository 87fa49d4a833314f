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
arguments call the function uncached (DEBUG log). Results are stored and
decoded as query entries are (``EntryStore.pack`` / ``unpack``): they must pickle,
and only the types the allow-listed unpickler accepts can come back
(``safepickle.py``; add your own classes with ``safepickle.allow(cls)``); a
result naming any other global is not stored (one WARNING per function, then
DEBUG) and the function runs on every call.
"""
from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, Optional, TypeVar

from sqlalchemy import inspect

from . import keys, safepickle
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
        warned: List[bool] = []

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
            entry = cache.unpack(found.get(key), MEMO_FORMAT, _any)
            if entry is not None and cache.is_current(entry.tag, found):
                cache.hit(key)
                return entry.payload
            cache.miss(key, "absent" if entry is None else "version_moved")
            versions = cache.ensure_versions(version_keys, found)  # read before the function runs
            value = fn(*args, **kwargs)
            if versions is not None:
                _store(cache, name, key, versions, value, expire, warned)
            return value

        wrapper.invalidate = lambda: cache.bump(version_keys[:-1])  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _any(value: Any) -> bool:
    return True


def _store(cache: "ORMCache", name: str, key: str, tag: Any, value: Any, expire: Optional[int],
           warned: List[bool]) -> None:
    blob = cache.pack(key, MEMO_FORMAT, tag, value)
    if blob is None:
        return
    # a result the allow-listed decoder would refuse is never stored: it could only ever miss
    reason = safepickle.refusal(blob)
    if reason is not None:
        level = logging.DEBUG if warned else logging.WARNING
        warned.append(True)
        log.log(level, "memoized %s returned a value the cache cannot decode safely (%s); not cached: "
                "return allowed types, or register the class with sqla_memcache.orm.safepickle.allow()",
                name, reason)
        return
    cache.set_packed(key, tag, blob, expire)
