"""One bounded memo table, used wherever a pure function of a hashable key is remembered.

A dict that grows without bound keeps every statement shape, mapper or
string it has seen; clearing it "when full" throws away the hot entries with
the cold. :class:`Memo` evicts the least recently used entry instead, and
costs one dict lookup on a hit.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Hashable, Optional, TypeVar

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
