"""Memo tables: the two kinds used wherever a pure function of a key is remembered.

A dict that grows without bound keeps every statement shape, mapper or
string it has seen; clearing it "when full" throws away the hot entries with
the cold. :class:`Memo` evicts the least recently used entry instead, and
costs one dict lookup on a hit. :class:`WeakMemo` is for values computed from
a long-lived object such as a mapper: it holds the object weakly, so a
mapper (and its class) that is discarded is forgotten, not kept alive.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Dict, Generic, Hashable, Optional, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    """A thread-safe LRU mapping of at most ``maxsize`` entries.

    ``get(key)`` answers None when absent; ``get_or_make(key, make)`` calls
    ``make()`` on a miss and remembers its result (two threads missing
    together may both call ``make``; the results must be equivalent).
    """

    __slots__ = ("maxsize", "_data", "_lock")

    def __init__(self, maxsize: int = 1024) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1, got %r" % (maxsize,))
        self.maxsize = maxsize
        self._data: "OrderedDict[K, V]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> Optional[V]:
        data = self._data
        try:
            value = data[key]
        except KeyError:
            return None
        try:
            data.move_to_end(key)
        except KeyError:  # evicted by another thread meanwhile
            pass
        return value

    def put(self, key: K, value: V) -> V:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
        return value

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        found = self.get(key)
        if found is None:
            found = self.put(key, make())
        return found

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


class WeakMemo(Generic[V]):
    """``obj -> make()`` computed once per live object; forgotten when ``obj`` is collected.

    Looked up by ``id(obj)`` (one dict lookup, cheaper than a
    ``WeakKeyDictionary``); a ``weakref.finalize`` removes the entry when the
    object dies, before its id can be reused. Objects that cannot be weakly
    referenced are not remembered (``make`` runs on every call).
    """

    __slots__ = ("_data", "_lock")

    def __init__(self) -> None:
        self._data: Dict[int, V] = {}
        self._lock = threading.Lock()

    def get_or_make(self, obj: Any, make: Callable[[], V]) -> V:
        try:
            return self._data[id(obj)]
        except KeyError:
            pass
        value = make()
        with self._lock:
            if id(obj) not in self._data:
                try:
                    weakref.finalize(obj, self._data.pop, id(obj), None)
                except TypeError:  # not weak-referenceable
                    return value
                self._data[id(obj)] = value
        return value

    def __len__(self) -> int:
        return len(self._data)
