"""Decoded entries kept in the process: a hit checks versions only, without fetching or unpickling.

An entry is immutable once stored (a newer result gets new versions), so a
process that decoded one can keep it and, on the next lookup of the same key,
read only the version keys of its tag -- in the single round trip the lookup
makes anyway. When every version is unchanged (and none has an undelivered
bump) the held payload is served; otherwise it is dropped and the lookup
proceeds as if nothing were held. Invalidation semantics do not change: the
same versions are compared, by the same ``is_current``.

Only payloads that cannot be changed through the objects built from them
are held: ``rows.Rows`` whose every value is of an immutable type (numbers,
strings, bytes, dates and times, Decimal, UUID, enums, tuples of those). A
JSON or PickleType column holding a dict or list makes the entry not held
(merged objects share their values with the payload). The table is an LRU
bounded by an estimate of the memory held (``len(raw) * 3``).
"""
from __future__ import annotations

import datetime
import decimal
import enum
import threading
import uuid
from collections import OrderedDict
from typing import Any, List, NamedTuple, Optional

from . import _compat
from .api import Entry, Tag
from .rows import Rows

_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), decimal.Decimal, datetime.date, datetime.time,
              datetime.timedelta, uuid.UUID, enum.Enum, frozenset)


def _immutable(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(_immutable(item) for item in value)
    return isinstance(value, _IMMUTABLE)


def holdable(payload: Any) -> bool:
    """True when ``payload`` can be shared by every session that hits it."""
    if not isinstance(payload, Rows):
        return False
    for _i, _j, _cls, _key, _path, values in payload.objects:
        if not all(_immutable(value) for value in values.values()):
            return False
    data = payload.data
    rows = data if _compat.supports_scalars(payload.template) else [v for row in data for v in row]
    return all(value is None or _immutable(value) for value in rows)


class _Held(NamedTuple):
    cost: int  # bytes charged against max_bytes (about 3x the pickle)
    entry: Entry


class HeldEntries:
    """Entry key -> ``(tag, payload)``, least recently used evicted past ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._data: "OrderedDict[str, _Held]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Optional[Entry]:
        found = self._data.get(key)
        if found is None:
            return None
        try:
            self._data.move_to_end(key)
        except KeyError:  # dropped by another thread meanwhile
            pass
        return found.entry

    def put(self, key: str, size: int, tag: Tag, payload: Any) -> None:
        cost = size * 3
        if not self.max_bytes or cost > self.max_bytes // 4 or not holdable(payload):
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old.cost
            self._data[key] = _Held(cost, Entry(dict(tag), payload))
            self._bytes += cost
            while self._bytes > self.max_bytes and self._data:
                self._bytes -= self._data.popitem(last=False)[1].cost

    def drop(self, key: str) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old.cost

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> List[str]:
        """The keys of the entries held, least recently used first."""
        with self._lock:
            return list(self._data)

    @property
    def bytes(self) -> int:
        """The estimated memory held."""
        return self._bytes
