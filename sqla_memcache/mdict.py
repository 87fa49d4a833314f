"""MemcachedDict: a ``MutableMapping`` view of memcached under a key prefix.

The classic "memcached as a Python dictionary" tool::

    from sqla_memcache import Client, MemcachedDict

    client = Client(["127.0.0.1:11211"])
    d = MemcachedDict(client, key_prefix="app:")
    d["greeting"] = "hello"          # set app:greeting
    d["greeting"]                    # -> "hello"; KeyError on a miss
    d.get("nope")                    # -> None
    d.incr("hits")                   # counter, created at 1 when missing
    for attempt in d.edit("cart", default=()):   # read-modify-write with CAS
        with attempt as box:
            box.value = box.value + ("apple",)

What it is *not*: memcached is a cache, so any key may vanish (eviction,
expiry, restart) between two calls. Two consequences are documented here
rather than hidden:

* ``None`` cannot be stored: memcached clients report a miss as ``None``, so a
  stored ``None`` would read back as "missing". ``d[k] = None`` raises ValueError.
* Iteration, ``len()``, ``keys()``, ``items()``, ``values()`` and ``clear()`` use
  memcached's ``lru_crawler metadump all`` on every server and keep the keys
  under the prefix. That is a **best-effort snapshot**: keys written, deleted or
  evicted while the crawler runs may or may not appear (``items()`` and
  ``values()`` skip keys that vanish before their value is read), and it costs
  a walk over the whole cache. Servers started with
  ``-X`` (``--disable-dumping``) refuse it: :class:`DumpingNotAllowed` is raised.

Atomic updates use ``gets``/``cas`` (the bundled client's ``gets_cas``, so any
:class:`~sqla_memcache.Client` works, shared by threads or not; a python-memcached
client needs ``cache_cas=True``). A ``with`` block's body runs once, so a plain
``with d.edit(k) as box:`` is a *single* attempt that raises
:class:`EditConflict` when another writer got there first; iterate over
``d.edit(k)`` (as above) to retry up to ``max_retries`` times, or pass a function
to :meth:`MemcachedDict.modify`.
"""
from __future__ import annotations

import logging
from collections.abc import ItemsView, MutableMapping, ValuesView
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Type

from .dump import dump_items, dump_keys, parse_metadump, server_addresses, server_label
from .errors import DumpingNotAllowed, EditConflict, MemcachedDictError

__all__ = [
    "MemcachedDict", "Box", "Edit",
    # re-exported: the key dumping of dump.py and the errors of errors.py, long importable from here
    "DumpingNotAllowed", "EditConflict", "MemcachedDictError",
    "dump_items", "dump_keys", "parse_metadump", "server_addresses", "server_label",
]

log = logging.getLogger(__name__)

_VIEW_BATCH = 100  # keys per get_multi round trip when iterating items()/values()




_MISSING: Any = object()


@dataclass
class Box:
    """The value being edited in :meth:`MemcachedDict.edit`; assign ``box.value`` to change it.

    ``existed`` tells whether the key was present (False when ``default`` was used).
    """

    value: Any
    existed: bool


# --------------------------------------------------------------------------- the mapping

class _EditAttempt:
    """One gets -> body -> cas round; the context manager yielded by iterating an Edit."""

    def __init__(self, owner: "MemcachedDict", key: str, default: Any) -> None:
        self._owner, self._key, self._default = owner, key, default
        self.box: Optional[Box] = None
        self.stored = False
        self._cas_id: Optional[int] = None

    def __enter__(self) -> Box:
        value, self._cas_id = self._owner._gets(self._owner._full(self._key))
        if value is None:
            if self._default is _MISSING:
                raise KeyError(self._key)
            self.box = Box(self._default, existed=False)
        else:
            self.box = Box(value, existed=True)
        return self.box

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if exc_type is not None or self.box is None:
            return
        self._owner._check_value(self.box.value)
        full = self._owner._full(self._key)
        client, expire = self._owner._client, self._owner.expire
        if self.box.existed and self._cas_id is not None:
            self.stored = bool(client.cas(full, self.box.value, expire, cas_id=self._cas_id))
        elif self.box.existed:  # python-memcached: cas() uses the id its gets() remembered
            self.stored = bool(client.cas(full, self.box.value, expire))
        else:
            self.stored = bool(client.add(full, self.box.value, expire))


class Edit:
    """Returned by :meth:`MemcachedDict.edit`: iterate for retries, or use once as a context manager."""

    def __init__(self, owner: "MemcachedDict", key: str, default: Any, max_retries: int) -> None:
        self._owner, self._key, self._default, self._max_retries = owner, key, default, max_retries
        self._single: Optional[_EditAttempt] = None

    def __iter__(self) -> Iterator[_EditAttempt]:
        for number in range(1, self._max_retries + 1):
            attempt = _EditAttempt(self._owner, self._key, self._default)
            yield attempt
            if attempt.stored:
                return
            log.debug("edit of %r conflicted (attempt %d)", self._key, number)
        raise EditConflict(self._key, self._max_retries)

    def __enter__(self) -> Box:
        self._single = _EditAttempt(self._owner, self._key, self._default)
        return self._single.__enter__()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        assert self._single is not None
        self._single.__exit__(exc_type, exc, tb)
        if exc_type is None and not self._single.stored:
            raise EditConflict(self._key, 1)


def _present_items(mapping: "MemcachedDict") -> Iterator[Tuple[str, Any]]:
    """``(key, value)`` for the listed keys, fetched in batches; vanished keys are skipped."""
    batch: List[str] = []
    for key in mapping:
        batch.append(key)
        if len(batch) == _VIEW_BATCH:
            yield from _fetch(mapping, batch)
            batch = []
    yield from _fetch(mapping, batch)


def _fetch(mapping: "MemcachedDict", batch: List[str]) -> Iterator[Tuple[str, Any]]:
    found = mapping.get_many(batch) if batch else {}
    return ((key, found[key]) for key in batch if key in found)


class _ItemsView(ItemsView):  # type: ignore[type-arg]
    def __iter__(self) -> Iterator[Tuple[str, Any]]:
        return _present_items(self._mapping)  # type: ignore[attr-defined]


class _ValuesView(ValuesView):  # type: ignore[type-arg]
    def __iter__(self) -> Iterator[Any]:
        return (value for _key, value in _present_items(self._mapping))  # type: ignore[attr-defined]


class MemcachedDict(MutableMapping):  # type: ignore[type-arg]
    """A dict-like view of the keys of ``client`` that start with ``key_prefix``.

    ``client`` is a :class:`sqla_memcache.Client` (or anything with the
    python-memcached API). Keys are ``str``; the stored memcached key is
    ``key_prefix + key`` and must satisfy memcached's key rules (no spaces or
    control characters, at most 250 bytes with any client-wide prefix).
    ``expire`` is the expiry in seconds given to every write (0 = never).
    ``max_retries`` bounds the CAS retries of :meth:`edit` and :meth:`modify`.
    """

    def __init__(self, client: Any, key_prefix: str = "", expire: int = 0, max_retries: int = 20) -> None:
        if max_retries < 1:
            raise ValueError("max_retries must be at least 1")
        self._client = client
        self.key_prefix = key_prefix
        self.expire = expire
        self.max_retries = max_retries

    def __repr__(self) -> str:
        return f"MemcachedDict(key_prefix={self.key_prefix!r}, servers={server_addresses(self._client)!r})"

    def _full(self, key: str) -> str:
        if not isinstance(key, str):
            raise TypeError(f"MemcachedDict keys are str, not {type(key).__name__}")
        return self.key_prefix + key

    @staticmethod
    def _check_value(value: Any) -> None:
        if value is None:
            raise ValueError("memcached cannot tell a stored None from a miss; store a sentinel instead")

    def _gets(self, full: str) -> Tuple[Any, Optional[int]]:
        """``(value, cas_id)`` with the bundled client; ``(value, None)`` with python-memcached,
        whose ``cas()`` then uses the id its ``gets()`` remembered (``cache_cas=True``)."""
        gets_cas = getattr(self._client, "gets_cas", None)
        if gets_cas is not None:
            value, cas_id = gets_cas(full)
            return value, cas_id
        return self._client.gets(full), None

    def _store_failed(self, key: str) -> MemcachedDictError:
        return MemcachedDictError(f"memcached did not store {key!r} (server down or value too large?)")

    # -- the Mapping core
    def __getitem__(self, key: str) -> Any:
        value = self._client.get(self._full(key))
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._check_value(value)
        if not self._client.set(self._full(key), value, self.expire):
            raise self._store_failed(key)

    def __delitem__(self, key: str) -> None:
        # delete() answers 0 both for NOT_FOUND and for a failure (python-memcached's
        # contract), so presence is checked first; a concurrent delete in between is harmless.
        full = self._full(key)
        if self._client.get(full) is None:
            raise KeyError(key)
        self._client.delete(full)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._client.get(self._full(key)) is not None

    def __iter__(self) -> Iterator[str]:
        """Keys under the prefix (prefix stripped): a best-effort snapshot via metadump."""
        strip = len(self._dump_prefix())
        for full in dump_keys(self._client, self._dump_prefix()):
            yield full[strip:]

    def __len__(self) -> int:
        """Number of keys under the prefix: best-effort, see :meth:`__iter__`."""
        return sum(1 for _ in self)

    def _dump_prefix(self) -> str:
        client_prefix = getattr(self._client, "key_prefix", "") or ""
        if isinstance(client_prefix, bytes):
            client_prefix = client_prefix.decode("utf-8")
        return client_prefix + self.key_prefix

    # -- faster or atomic versions of MutableMapping mixins
    def items(self) -> _ItemsView:  # type: ignore[override]
        """Snapshot view of ``(key, value)`` pairs; values fetched in batches, vanished keys skipped."""
        return _ItemsView(self)

    def values(self) -> _ValuesView:  # type: ignore[override]
        """Snapshot view of the values; fetched in batches, vanished keys skipped."""
        return _ValuesView(self)

    def get_many(self, keys: Iterable[str]) -> Dict[str, Any]:
        """Fetch several keys in one round trip per server; missing keys are left out."""
        keys = list(keys)
        for key in keys:
            self._full(key)  # type check
        return dict(self._client.get_multi(keys, key_prefix=self.key_prefix))

    def update(self, other: Any = (), /, **kwargs: Any) -> None:  # type: ignore[override]
        """Store many items with one ``set_multi``; raises MemcachedDictError naming unstored keys."""
        items: Dict[str, Any] = {}
        pairs = other.items() if isinstance(other, Mapping) else other
        for key, value in list(pairs) + list(kwargs.items()):
            self._full(key)
            self._check_value(value)
            items[key] = value
        if not items:
            return
        failed = self._client.set_multi(items, self.expire, key_prefix=self.key_prefix)
        if failed:
            raise MemcachedDictError(f"memcached did not store {sorted(failed)!r}")

    def setdefault(self, key: str, default: Any = None) -> Any:
        """Atomically store ``default`` when ``key`` is missing (``add``); return the stored value."""
        self._check_value(default)
        full = self._full(key)
        for _ in range(self.max_retries):
            if self._client.add(full, default, self.expire):
                return default
            value = self._client.get(full)
            if value is not None:
                return value
            # added by someone else and gone again (deleted/evicted): try again
        raise EditConflict(key, self.max_retries)

    def clear(self) -> None:
        """Delete every key under the prefix found by a metadump snapshot."""
        keys = list(self)
        if keys:
            self._client.delete_multi(keys, key_prefix=self.key_prefix)

    # -- read-modify-write
    def edit(self, key: str, default: Any = _MISSING) -> Edit:
        """Read-modify-write ``key`` with ``gets``/``cas``.

        Retrying form (the body runs again after a conflict, at most ``max_retries`` times,
        then EditConflict)::

            for attempt in d.edit("cart", default=()):
                with attempt as box:
                    box.value = box.value + ("apple",)

        Single-attempt form (EditConflict at once on a conflict)::

            with d.edit("cart", default=()) as box:
                box.value = box.value + ("apple",)

        A missing key raises KeyError unless ``default`` is given; then it is
        created with ``add`` so two creators cannot both win. An exception in the
        body writes nothing.
        """
        self._full(key)
        if not hasattr(self._client, "gets_cas") and not getattr(self._client, "cache_cas", False):
            raise MemcachedDictError("edit() on a python-memcached client needs cache_cas=True")
        return Edit(self, key, default, self.max_retries)

    def modify(self, key: str, function: Callable[[Any], Any], default: Any = _MISSING) -> Any:
        """Atomically replace the value of ``key`` by ``function(value)``; return the new value.

        ``function`` may run several times (once per CAS attempt), so it must be pure.
        """
        for attempt in self.edit(key, default):
            with attempt as box:
                box.value = function(box.value)
        return box.value

    # -- counters
    def incr(self, key: str, delta: int = 1, initial: Optional[int] = 0) -> int:
        """Atomically add ``delta``; return the new value.

        A missing key is created as ``initial + delta`` (``initial=None``: KeyError).
        The stored value must be a non-negative decimal integer (memcached's rule).
        """
        return self._count("incr", key, delta, initial)

    def decr(self, key: str, delta: int = 1, initial: Optional[int] = 0) -> int:
        """Atomically subtract ``delta`` (memcached stops at 0); return the new value.

        A missing key is created as ``max(0, initial - delta)`` (``initial=None``: KeyError).
        """
        return self._count("decr", key, delta, initial)

    def _count(self, command: str, key: str, delta: int, initial: Optional[int]) -> int:
        full = self._full(key)
        operation = getattr(self._client, command)
        for _ in range(self.max_retries):
            value = operation(full, delta)
            if value is not None:
                return int(value)
            if initial is None:
                raise KeyError(key)
            start = initial + delta if command == "incr" else max(0, initial - delta)
            if self._client.add(full, start, self.expire):
                return start
            # someone else created it first: count on top of theirs
        raise EditConflict(key, self.max_retries)
